"""The pipeline's two calls into the runtime package: `check` before training, `deploy` after
the eager measurements, and `log` into the run (tags, the runtime's file, the MLflow model)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compression.core.lazy import nn
from compression.runtime.base import RUNTIMES, Deployed, DeployJob

if TYPE_CHECKING:  # a runtime import would cycle: config -> runtime
    from compression.config.run import RunConfig
    from compression.data import DataSpec, Splits
    from compression.tracking import Run

logger = logging.getLogger(__name__)


def check(model: nn.Module, rc: RunConfig, spec: DataSpec) -> None:
    """Refuse, before training, what the run's runtime cannot export or run."""
    RUNTIMES.get(rc.runtime.name).handler.check(model, rc.runtime, rc.quantization, rc.pruning,
                                                spec)


def deploy(rc: RunConfig, splits: Splits, session: Any, baseline: nn.Module, model: nn.Module,
           out_dir: Path, eager: dict[str, float], quantized: nn.Module | None = None
           ) -> Deployed | None:
    """Build, evaluate and time the run's model in its runtime (None for runtime=torch). The
    runtime's latencies are also set against eager's (`rt_vs_eager`: eager / runtime latency
    of the final model, > 1 when the runtime is faster)."""
    job = DeployJob(cfg=rc.runtime, quant=rc.quantization, pruning=rc.pruning,
                    measure=rc.measure, threads=rc.latency_threads, splits=splits,
                    baseline=baseline, model=model, calibration=session.calibration_batches,
                    out_dir=out_dir, quantized=quantized)
    deployed = RUNTIMES.get(rc.runtime.name).handler.deploy(job)
    if deployed is None:
        return None
    m = deployed.metrics
    for label in ("", "batch_"):
        if f"rt_{label}latency_ms" in m and f"{label}latency_ms" in eager:
            m[f"rt_{label}vs_eager"] = eager[f"{label}latency_ms"] / m[f"rt_{label}latency_ms"]
    logger.info(summary_line(rc.runtime.name, m))
    return deployed


def summary_line(name: str, m: dict[str, float]) -> str:
    lat = (f" latency {m['rt_latency_ms']:.3f}ms (speedup {m['rt_speedup']:.2f}x, batch "
           f"{m['rt_batch_speedup']:.2f}x; vs eager {m.get('rt_vs_eager', float('nan')):.2f}x)"
           if "rt_latency_ms" in m else "")
    return (f"runtime={name}: acc {m['rt_accuracy']:.4f} size {int(m['rt_size_bytes'])}B{lat}")


def log(mlrun: Run, rc: RunConfig, deployed: Deployed | None, artifact: Path,
        spec: DataSpec) -> None:
    """Tags, the runtime's file (artifact `runtime/`) and, with tracking.log_model, the
    compressed model as an MLflow model (artifact `mlflow_model/`, see mlflow_model)."""
    from compression.runtime import mlflow_model

    mlrun.set_tags({"runtime": rc.runtime.name, **(deployed.tags if deployed else {})})
    if deployed is not None:
        mlrun.log_artifact(deployed.file, "runtime")
    if rc.tracking.log_model:
        onnx_file = deployed.onnx_file if deployed else None
        mlflow_model.log(mlrun, artifact, onnx_file, spec)
