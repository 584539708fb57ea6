"""The typed, validated view of a composed Hydra config.

`RunConfig.from_cfg` checks every value before any work starts and raises a one-line
`ConfigError` naming the key and the allowed values.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from compression.artifact.config import ExportConfig
from compression.core import paths, plugins
from compression.core import validation as v
from compression.core.errors import ConfigError
from compression.core.job import JobContext
from compression.core.registry import Registry, build_dataclass
from compression.data import DataConfig
from compression.measure import MeasureConfig, peak_rss_resettable
from compression.models.config import ModelConfig
from compression.pruning import PRUNERS, PruningConfig
from compression.quantization import QUANTIZERS, QuantizationConfig
from compression.runtime import RT_METRICS, RUNTIMES, RuntimeConfig
from compression.tracking import TrackingConfig
from compression.training.loop import FinetuneConfig, TrainConfig
from compression.training.quality import MetricConfig

CONFIG_DIR = paths.PROJECT_ROOT / "conf"

# The metrics the pipeline itself logs. Pruning methods and quantization modes declare theirs
# where they register (Registry.register(..., metrics=...)); any other stage that logs metrics
# lists them in EXTRA_METRICS (one line each, easy to merge). `objectives` may name any of them.
CORE_METRICS = (
    "accuracy", "val_accuracy", "baseline_accuracy", "baseline_val_accuracy", "accuracy_drop",
    "val_accuracy_drop", "accuracy_drop_rel", "val_accuracy_drop_rel", "pruned_at_epoch",
    "pruned_val_accuracy",
    "sparsity", "params", "nonzero_params", "flops", "effective_flops", "theoretical_speedup",
    "size_bytes", "dense_size_bytes", "compression_ratio", "latency_ms", "latency_p90_ms",
    "batch_latency_ms", "batch_latency_p90_ms", "throughput", "speedup", "batch_speedup",
    "baseline_latency_ms", "baseline_batch_latency_ms", "model_bytes",
    "baseline_train_seconds", "finetune_seconds", "quantize_seconds", "measure_seconds",
    "total_seconds", "baseline_cache_hit", "threads", "train_threads",
    "dead_output_rows", "dead_internal_channels", "quant_zero_fraction",
    "payload_bytes", "header_bytes", "state_dict_bytes",
)
EXTRA_METRICS: list[str] = [
    "sparse_kernel_layers",  # pruning.sparse_kernel (an option of every method)
    "weight_bits",  # stored bits per weight of the reloaded artifact (metrics.weight_bits)
    *RT_METRICS,  # runtime=onnxruntime|executorch: measured in the runtime (compression/runtime)
]


def metric_names() -> tuple[str, ...]:
    """Every metric a run may log, as registered now (a method discovered later adds its own).
    peak_rss_mb only where it is measured per run (reset per run, see metrics.peak_rss_mb)."""
    per_run_rss = ("peak_rss_mb",) if peak_rss_resettable() else ()
    return tuple(dict.fromkeys([*CORE_METRICS, *PRUNERS.metrics(), *QUANTIZERS.metrics(),
                                *EXTRA_METRICS, *per_run_rss]))


plugins.load_entry_points()  # installed plug-ins register beside the built-ins
RUN_METRICS = metric_names()  # every built-in method and mode is registered by now


@dataclass(frozen=True)
class Produced:
    """When a run logs a metric that not every run logs: `holds(cfg)` on the nested config
    (RunConfig.params(), or a composed config's plain dict); `keys` decide it (a sweep that
    varies one of them cannot be checked before its trials); `needs` says what would produce it."""

    keys: tuple[str, ...]
    holds: Callable[[Mapping[str, Any]], bool]
    needs: str


def _show(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)  # as YAML spells it


def _get(cfg: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


_LATENCY = Produced(("measure.latency",), lambda c: _get(c, "measure.latency", True) is True,
                    "measure.latency=true")
# Metrics that only some configurations log, besides those a registry entry declares (see
# conditional_metrics); every other metric of RUN_METRICS is always logged.
_PIPELINE_CONDITIONAL: dict[str, Produced] = {
    **{name: _LATENCY for name in (
        "latency_ms", "latency_p90_ms", "batch_latency_ms", "batch_latency_p90_ms",
        "throughput", "speedup", "batch_speedup", "baseline_latency_ms",
        "baseline_batch_latency_ms")},
    "sparse_kernel_layers": Produced(
        ("pruning.sparse_kernel",), lambda c: _get(c, "pruning.sparse_kernel") is True,
        "pruning.sparse_kernel=true"),
    # logged only by a trial that a sweep's pruner stopped, which returns nothing
    **{name: Produced((), lambda c: False, "a trial stopped by hydra.sweeper.pruner; never an "
                      "objective") for name in ("pruned_at_epoch", "pruned_val_accuracy")},
}


def _declared_by(registry: Registry[Any], metric: str) -> Produced:
    """A metric that registry entries declare is logged exactly by runs choosing one of them."""
    names = tuple(registry.declaring(metric))
    return Produced((registry.key,), lambda c: _get(c, registry.key) in names,
                    f"{registry.key.split('.')[0]}={'|'.join(names)}")


def conditional_metrics() -> dict[str, Produced]:
    """When each conditionally logged metric is logged: a method's, mode's or runtime's own
    metrics come from what its entry declares (so a new mode or a plug-in is covered by
    construction), the pipeline's own from _PIPELINE_CONDITIONAL."""
    out = dict(_PIPELINE_CONDITIONAL)
    for registry in (PRUNERS, QUANTIZERS, RUNTIMES):
        for metric in registry.metrics():
            out[metric] = _declared_by(registry, metric)
    # modes declare weight_bits; torchao's tensor subclasses and CSR kernels do not tell it
    bits = out["weight_bits"]
    out["weight_bits"] = Produced(
        (*bits.keys, "quantization.backend", "pruning.sparse_kernel"),
        lambda c: bits.holds(c) and _get(c, "quantization.backend") != "torchao"
        and _get(c, "pruning.sparse_kernel") is not True,
        f"{bits.needs} (not torchao), without pruning.sparse_kernel")
    return out


def check_produced(names: Iterable[str], cfg: Mapping[str, Any], key: str = "objectives",
                   varying: Iterable[str] = ()) -> None:
    """Refuse, before training, a metric (objective or sweeper constraint) that a run of `cfg`
    will not log. Metrics decided by a key in `varying` (swept) are left to each trial."""
    varying = list(varying)
    conditional = conditional_metrics()

    def varies(k: str) -> bool:
        return any(k == s or k.startswith(f"{s}.") or s.startswith(f"{k}.") for s in varying)

    for name in names:
        produced = conditional.get(name)
        if produced is None or any(varies(k) for k in produced.keys) or produced.holds(cfg):
            continue
        now = ", ".join(f"{k}={_show(_get(cfg, k))}" for k in produced.keys)
        raise ConfigError(f"{key}={name}: a run with {now} does not log it (it needs "
                          f"{produced.needs})")


TOP_LEVEL = {"data", "model", "train", "finetune", "pruning", "quantization", "measure",
             "tracking", "seed", "objectives", "paths", "hydra", "metric", "runtime", "export",
             "target",  # sweep=autotune's target: read by the sweeper, not by a job
             "plugins"}  # the user's own modules to import (compression.core.plugins)

if not OmegaConf.has_resolver("project_root"):
    # Lets conf/ anchor Hydra's output folders at the repository, whatever the cwd.
    OmegaConf.register_new_resolver("project_root", lambda: str(paths.project_root()))


@dataclass
class PathsConfig:
    cache: str = "outputs/cache"  # baseline cache; relative paths are from the project root
    artifacts: str = "outputs/artifacts"  # per-run files (also uploaded to MLflow)

    @property
    def cache_dir(self) -> Path:
        return paths.resolve(self.cache)

    @property
    def artifacts_dir(self) -> Path:
        return paths.resolve(self.artifacts)


@dataclass
class RunConfig:
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    finetune: FinetuneConfig
    pruning: PruningConfig
    quantization: QuantizationConfig
    measure: MeasureConfig
    tracking: TrackingConfig
    paths: PathsConfig
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    seed: int = 0
    objectives: tuple[str, ...] = ("val_accuracy",)
    metric: MetricConfig = field(default_factory=MetricConfig)  # what `accuracy` measures
    export: ExportConfig = field(default_factory=ExportConfig)
    plugins: tuple[str, ...] = ()  # import paths of the user's modules, imported before the rest

    def __post_init__(self) -> None:
        v.number("seed", self.seed, integer=True)
        if not self.objectives:
            raise ConfigError("objectives is empty; name at least one metric, e.g. [val_accuracy]")
        allowed = metric_names()
        for name in self.objectives:
            v.one_of("objectives", name, allowed)
        check_produced(self.objectives, self.params())
        if self.pruning.sparse_kernel and self.quantization.mode != "none":
            raise ConfigError(f"pruning.sparse_kernel=true runs fp32 sparse kernels and cannot "
                              f"be combined with quantization.mode={self.quantization.mode}; "
                              "use one or the other")

    @property
    def latency_threads(self) -> int:
        """Torch threads while timing: `measure.threads` (default 1, stable on shared machines
        and typical of edge deployment), else the same as training."""
        return self.measure.threads if self.measure.threads is not None else self.threads

    @property
    def threads(self) -> int:
        """Torch threads for training: the cores shared among parallel workers."""
        workers = JobContext.current().workers
        # the cores this process may run on: a SLURM job's allocation, not the whole node
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        return max(1, (cores or os.cpu_count() or 1) // max(1, workers))

    @classmethod
    def from_cfg(cls, cfg: DictConfig | dict[str, Any]) -> RunConfig:
        raw = cfg if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=True)
        assert isinstance(raw, dict)
        v.finite_tree({k: val for k, val in raw.items() if k != "hydra"})
        # first: a plug-in's names are valid values of the sections validated below
        loaded = plugins.load(raw.get("plugins") or [])
        unknown = sorted(set(raw) - TOP_LEVEL)
        if unknown:
            allowed = ", ".join(sorted(TOP_LEVEL))
            raise ConfigError(f"{unknown[0]} is not a valid top-level key; allowed: {allowed}")

        def section(name: str) -> dict[str, Any]:
            value = raw.get(name) or {}
            if not isinstance(value, dict):
                raise ConfigError(f"{name}={value!r} must be a mapping of settings")
            return value

        objectives = raw.get("objectives", ["val_accuracy"])
        if isinstance(objectives, str):
            objectives = [objectives]
        # The model section last: a valid built-in model name imports the models (and torch),
        # so every other section's mistake is reported without waiting for torch.
        return cls(
            data=DataConfig.from_dict(section("data")),
            train=build_dataclass(TrainConfig, section("train"), "train"),
            finetune=build_dataclass(FinetuneConfig, section("finetune"), "finetune"),
            pruning=PRUNERS.build_config({"method": "none", **section("pruning")}),
            quantization=QUANTIZERS.build_config({"mode": "none", **section("quantization")}),
            measure=build_dataclass(MeasureConfig, section("measure"), "measure"),
            tracking=build_dataclass(TrackingConfig, section("tracking"), "tracking"),
            paths=build_dataclass(PathsConfig, section("paths"), "paths"),
            runtime=RUNTIMES.build_config({"name": "torch", **section("runtime")}),
            seed=raw.get("seed", 0),
            objectives=tuple(objectives),
            metric=MetricConfig.from_dict(section("metric")),
            export=build_dataclass(ExportConfig, section("export"), "export"),
            model=ModelConfig.from_dict(section("model")),
            plugins=tuple(loaded),
        )

    def params(self) -> dict[str, Any]:
        """The resolved config as a nested dict (logged flattened as MLflow params)."""
        from dataclasses import asdict

        return {
            "data": asdict(self.data), "model": self.model.to_dict(), "train": asdict(self.train),
            "finetune": asdict(self.finetune), "pruning": asdict(self.pruning),
            "quantization": asdict(self.quantization), "measure": asdict(self.measure),
            "seed": self.seed, "objectives": list(self.objectives),
            "metric": self.metric.to_dict(),
            "runtime": asdict(self.runtime),
            "export": asdict(self.export),
            # only when set: runs without plug-ins keep exactly the params they always had
            **({"plugins": list(self.plugins)} if self.plugins else {}),
        }
