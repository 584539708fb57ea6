"""The source of a user's plug-in module, written by the plug-in tests into a temporary package
outside compression/: one pruning criterion, one quantization mode and one runtime, each
registered exactly as the documentation tells a user to (docs/extending.md). Every use appends
a line to the file named by $PLUGIN_LOG, so a test can see that train.py really called it."""

PLUGIN = '''
"""A user's own compression pieces, outside the project."""
import copy
import os
from dataclasses import dataclass

import torch

from compression.core.errors import ConfigError
from compression.models.config import prunable_layers
from compression.pruning.criteria import register_criterion
from compression.quantization.base import (
    FLOAT32, QUANTIZERS, SQNR, Passthrough, QuantizationConfig, Quantized, WeightErrors)
from compression.runtime import measure
from compression.runtime.base import RT_METRICS, RUNTIMES, Deployed, RuntimeConfig


def used(what):
    with open(os.environ["PLUGIN_LOG"], "a") as f:
        f.write(what + "\\n")


@register_criterion("row_normalized")
class RowNormalized:
    """|w| divided by its output row's L2 norm: every row keeps its relatively large weights."""
    signed = False
    from_scratch = False
    per_row = False

    def __init__(self, model, layers, session, n_batches):
        self.layers = layers

    def scores(self):
        used("criterion")
        out = {}
        for n, m in self.layers.items():
            w = m.weight.detach().abs().flatten(1)
            out[n] = (w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)).reshape(m.weight.shape)
        return out

    def observe(self):
        return None


@dataclass
class Pow2Config(QuantizationConfig):
    mode: str = "pow2"
    min_exponent: int = -12  # smaller magnitudes become 0

    def __post_init__(self):
        if not -30 <= self.min_exponent <= 0:
            raise ConfigError(f"quantization.min_exponent={self.min_exponent} is out of range; "
                              "allowed: [-30, 0]")


class Pow2(Passthrough):
    """Every prunable weight rounded to a signed power of two (log quantization), kept fp32."""

    form = FLOAT32  # a plain fp32 model: the built-in runtimes export it as it is

    def quantize(self, model, cfg, session):
        used("quantization")
        out, errors = copy.deepcopy(model), WeightErrors()
        for name, layer in prunable_layers(out).items():
            w = layer.weight.detach()
            exp = torch.round(torch.log2(w.abs().clamp_min(2.0 ** (cfg.min_exponent - 1))))
            q = torch.where(exp < cfg.min_exponent, torch.zeros_like(w), torch.sign(w) * 2 ** exp)
            errors.record(name, w, q)
            layer.weight.data.copy_(q)
        return errors.attach(Quantized(out, cfg))  # per-layer SQNR and quant_sqnr_db_min

    def skeleton(self, model, cfg, example):
        return model  # same modules, fp32: the artifact's weights are loaded into it


QUANTIZERS.register("pow2", Pow2Config, metrics=SQNR)(Pow2())


class Exported:
    """torch.export: the final model saved as a .pt2 program, loaded back and run from it."""

    def check(self, model, cfg, quant, pruning, spec):
        if quant.mode not in ("none", "pow2"):
            raise ConfigError(f"runtime=exported runs fp32 programs; quantization.mode="
                              f"{quant.mode} is refused (allowed: none, pow2)")

    def deploy(self, job):
        used("runtime")
        example = (job.spec.example_input(2),)  # batch 1 would be specialized
        model = job.quantized if job.quantized is not None else job.model
        files = {}
        for label, m in (("baseline", job.baseline), ("model", model)):
            batch = torch.export.Dim("batch")
            program = torch.export.export(m.eval(), example, dynamic_shapes=({0: batch},))
            files[label] = job.out_dir / f"{label}.pt2"
            torch.export.save(program, files[label])
        run = {k: torch.export.load(f).module() for k, f in files.items()}

        def predictor(module):
            def predict(x):
                with torch.inference_mode():
                    return module(torch.from_numpy(x)).numpy()
            return predict

        s = job.splits
        metrics = {"rt_accuracy": measure.accuracy(predictor(run["model"]), s.test_x, s.test_y),
                   "rt_val_accuracy": measure.accuracy(predictor(run["model"]), s.val_x, s.val_y),
                   "rt_size_bytes": float(files["model"].stat().st_size),
                   "rt_threads": float(job.threads)}
        if job.measure.latency:
            sizes = (1, job.measure.batch_size)
            metrics.update(measure.side_by_side(
                dict.fromkeys(sizes, predictor(run["baseline"])),
                dict.fromkeys(sizes, predictor(run["model"])), s.test_x, job.measure))
        files["baseline"].unlink()
        return Deployed(metrics, {"runtime_version": torch.__version__}, files["model"])


RUNTIMES.register("exported", RuntimeConfig, metrics=RT_METRICS)(Exported())
'''
