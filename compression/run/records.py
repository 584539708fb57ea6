"""What a run leaves behind besides its metrics: its MLflow params, tags and artifacts, its
readable name in the MLflow UI and its one-line summary in the log."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf
from torch import nn

from compression import tracking
from compression.config.run import RunConfig
from compression.models.build import prunable_layers
from compression.pruning import layer_targets
from compression.training.baseline import Baseline


def default_run_name(rc: RunConfig) -> str:
    """A readable name for the MLflow UI, e.g. `mlp-digits-unstructured0.9-dynamic_int8`."""
    if rc.tracking.run_name:
        return rc.tracking.run_name
    width = "" if rc.model.width == 1 else f"x{rc.model.width:g}"
    return (f"{rc.model.name}{width}-{rc.data.name}-{rc.pruning.run_label()}-"
            f"{rc.quantization.mode}")


def log_run(
    mlrun: tracking.Run,
    rc: RunConfig,
    results: dict[str, float],
    out_dir: Path,
    artifact: Path,
    layers_csv: Path,
    baseline: Baseline,
    session_params: dict[str, str] | None = None,
) -> None:
    mlrun.log_metrics(results)
    if session_params:
        mlrun.log_params(session_params)
    if (out_dir / "allocation.csv").exists():
        mlrun.log_artifact(out_dir / "allocation.csv")
    mlrun.set_tags(baseline.tags())
    config_file = out_dir / "config.yaml"
    config_file.write_text(OmegaConf.to_yaml(OmegaConf.create(rc.params())))
    mlrun.log_artifact(config_file)
    mlrun.log_artifact(layers_csv)
    if rc.tracking.log_model:
        mlrun.log_artifact(artifact, "model")


def what_was_pruned(model: nn.Module, rc: RunConfig) -> str:
    """The layers pruned, when not every prunable layer at the one target (include, exclude,
    overrides, keep_first_last): `[fc2]`, `[fc1@0.9, fc2@0.5]` (summary_line adds the channels
    and parameters a method removed)."""
    if not rc.pruning.prunes():
        return ""
    targets = layer_targets(model, rc.pruning)
    same = all(t == rc.pruning.sparsity for t in targets.values())
    if same and set(targets) == set(prunable_layers(model)):
        return ""  # everything at the one target: the method@sparsity says it all
    return "[" + ", ".join(n if same else f"{n}@{t:.4g}" for n, t in targets.items()) + "]"


def summary_line(rc: RunConfig, r: dict[str, float], pruned: str = "") -> str:
    removed = [f"{what} -{r[key]:.0%}" for what, key in (("channels", "channels_removed_fraction"),
                                                         ("params", "param_reduction"))
               if r.get(key)]
    pruned = " ".join([pruned, ", ".join(removed)]).strip()
    lat = (f" latency {r['latency_ms']:.3f}ms (speedup {r['speedup']:.2f}x, "
           f"batch {r['batch_speedup']:.2f}x)" if "latency_ms" in r else "")
    q = rc.quantization
    quant = q.label()  # e.g. dynamic_int8, lowbit/4, lowbit/mixed<=3
    if "weight_bits" in r and q.mode != "none":
        quant += f" ({r['weight_bits']:.3g} bits/weight)"
    return (
        f"{rc.model.name}/{rc.data.name} pruning={rc.pruning.method}@{rc.pruning.sparsity:.4g} "
        f"{pruned + ' ' if pruned else ''}quant={quant}: "
        f"{'acc' if rc.metric.is_default else rc.metric.name} {r['accuracy']:.4f} "
        f"(baseline {r['baseline_accuracy']:.4f}, val {r['val_accuracy']:.4f}) "
        f"sparsity {r['sparsity']:.3f} size {int(r['size_bytes'])}B "
        f"(dense {int(r['dense_size_bytes'])}B, {r['compression_ratio']:.2f}x){lat} "
        f"in {r['total_seconds']:.1f}s"
    )
