"""`runtime=executorch`: the on-device runtime. torch.export -> to_edge_transform_and_lower with
the XNNPACK partitioner -> a `.pte` program, run by ExecuTorch's Python runtime bindings.

XNNPACK programs here have static shapes (a dynamic batch bound by torch.export failed to resize
past a capacity it derived itself, measured with executorch 1.5.1), so one program is built per
timed batch size: batch 1 (the shipped file, `rt_size_bytes`) and measure.batch_size (which also
evaluates accuracy, the last partial batch zero-padded). Quantization follows the form the run's
mode declares (quantization/base.py), with XNNPACK's own PT2E quantizer: int8_dynamic
(dynamic_int8: int8 weights, per-batch activations), int8_static (static_int8, qat_int8: int8
weights and activations calibrated on the run's calibration batches), float16 (fp16: the model
and its inputs in half precision), float32 as is; weight_only (lowbit), codebook (kmeans) and
bfloat16 have no XNNPACK form and are refused."""

from __future__ import annotations

import copy
import importlib.metadata
import time
from collections.abc import Callable
from pathlib import Path

from compression.core.errors import ConfigError
from compression.core.lazy import nn, np, torch
from compression.data import DataSpec
from compression.pruning import PruningConfig
from compression.quantization import QuantizationConfig
from compression.quantization.base import (
    FLOAT16,
    FLOAT32,
    INT8_DYNAMIC,
    INT8_STATIC,
    form_of,
    modes_of_form,
)
from compression.runtime import measure
from compression.runtime.base import RT_METRICS, RUNTIMES, Deployed, DeployJob, RuntimeConfig
from compression.runtime.onnx_export import failed_op, quiet
from compression.runtime.onnxruntime import check_not_sparse_kernel

FORMS = (FLOAT32, FLOAT16, INT8_DYNAMIC, INT8_STATIC)  # what XNNPACK runs here


def _quantize(model: nn.Module, example: torch.Tensor, quant: QuantizationConfig,
              calib: Callable[[int], list[torch.Tensor]] | None) -> nn.Module:
    """XNNPACK's PT2E int8 flow on the exported graph (None calibration: an untrained check,
    calibrated on the example alone)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    dynamic = form_of(quant) == INT8_DYNAMIC
    per_channel = getattr(quant, "granularity", "channel") == "channel"
    quantizer = XNNPACKQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=per_channel, is_dynamic=dynamic))
    graph = torch.export.export(model, (example,)).module()
    prepared = prepare_pt2e(graph, quantizer)
    batches = [example] if calib is None or dynamic else calib(
        getattr(quant, "calibration_batches", 16))
    with torch.no_grad():
        for b in batches:
            prepared(b)
    return convert_pt2e(prepared)


def build_program(model: nn.Module, example: torch.Tensor, quant: QuantizationConfig,
                  calib: Callable[[int], list[torch.Tensor]] | None, path: Path, what: str
                  ) -> Path:
    """Lower `model` for inputs shaped like `example` to an XNNPACK `.pte` at `path`."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    model = copy.deepcopy(model).eval()
    try:
        with quiet("executorch"), torch.no_grad():
            form = form_of(quant)
            if form == FLOAT16:
                model, example = model.half(), example.half()
            elif form != FLOAT32:
                model = _quantize(model, example, quant, calib)
            program = torch.export.export(model, (example,))
            lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(lowered.to_executorch().buffer)
    except Exception as e:  # any export/lowering failure: one line naming the op
        op = failed_op(e)
        why = f"op {op} cannot be exported or lowered" if op else str(e).splitlines()[0][:200]
        raise ConfigError(f"runtime=executorch cannot build {what}: {why}") from None
    return path


class Program:
    """A loaded `.pte`: forward on numpy batches of the size it was built for."""

    def __init__(self, path: Path, batch: int, half: bool) -> None:
        from executorch.runtime import Runtime

        self.method = Runtime.get().load_program(str(path)).load_method("forward")
        self.batch, self.half = batch, half

    def __call__(self, x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(x)
        n = len(t)
        if n < self.batch:  # static shapes: pad the last partial batch, drop the padding after
            t = torch.cat([t, t.new_zeros(self.batch - n, *t.shape[1:])])
        out = self.method.execute([t.half() if self.half else t])[0]
        return out[:n].float().numpy()


class ExecuTorch:
    def check(self, model: nn.Module, cfg: RuntimeConfig, quant: QuantizationConfig,
              pruning: PruningConfig, spec: DataSpec) -> None:
        check_not_sparse_kernel(pruning, cfg.name)
        if form_of(quant) not in FORMS:
            raise ConfigError(f"runtime=executorch cannot run quantization.mode={quant.mode} "
                              f"(XNNPACK has no such kernels here); allowed: "
                              f"{', '.join(modes_of_form(FORMS))}")
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            build_program(model, spec.example_input(1), quant, None, Path(tmp) / "check.pte",
                          f"the model ({type(model).__name__})")

    def deploy(self, job: DeployJob) -> Deployed:
        fp32 = _none()
        sizes = sorted({1, job.measure.batch_size})
        t0 = time.perf_counter()
        half, source = form_of(job.quant) == FLOAT16, job.fp32_source()
        files: dict[str, dict[int, Path]] = {"baseline": {}, "final": {}}
        for b in sizes:
            example = job.spec.example_input(b)
            files["baseline"][b] = build_program(job.baseline, example, fp32, None,
                                                 job.out_dir / f"baseline_b{b}.pte", "the baseline")
            files["final"][b] = build_program(source, example, job.quant, job.calibration,
                                              job.out_dir / f"model_b{b}.pte", "the model")
        export_seconds = time.perf_counter() - t0
        threads = set_threads(job.threads)
        base = {b: Program(p, b, False) for b, p in files["baseline"].items()}
        final = {b: Program(p, b, half) for b, p in files["final"].items()}
        s, big = job.splits, max(sizes)
        metrics = {
            "rt_accuracy": measure.accuracy(final[big], s.test_x, s.test_y, batch=big),
            "rt_val_accuracy": measure.accuracy(final[big], s.val_x, s.val_y, batch=big),
            "rt_size_bytes": float(files["final"][1].stat().st_size),
            "rt_export_seconds": export_seconds,
            "rt_threads": float(threads),
        }
        if job.measure.latency:
            metrics.update(measure.side_by_side(base, final, s.test_x, job.measure))
        for p in [*files["baseline"].values(), *files["final"].values()]:
            if p != files["final"][1]:
                p.unlink()
        shipped = files["final"][1].rename(job.out_dir / "model.pte")
        tags = {"runtime": "executorch", "runtime_backend": "xnnpack",
                "runtime_version": importlib.metadata.version("executorch"),
                "runtime_threads": str(threads)}
        return Deployed(metrics, tags, shipped)


def set_threads(n: int) -> int:
    """Size ExecuTorch's (process-wide) XNNPACK threadpool to `n`; returns what it reports."""
    from executorch.extension.pybindings import portable_lib

    portable_lib._unsafe_reset_threadpool(n)
    return int(portable_lib._threadpool_get_thread_count())


def _none() -> QuantizationConfig:
    return QuantizationConfig(mode="none")


RUNTIMES.register("executorch", RuntimeConfig, metrics=RT_METRICS)(ExecuTorch())
