"""What every deployment runtime shares: its config, the job it is handed, what it returns, and
the registry (`runtime.name` -> config class + handler).

A runtime takes the pipeline's fp32 models (the dense baseline and the pruned model, at its
physically smaller shapes where pruning removed channels), builds its own file for the run's
quantization mode, evaluates accuracy IN the runtime on the test split and times it against its
own fp32 build of the baseline, interleaved in one process. `torch` is today's behaviour (the
eager figures the pipeline already measures) and adds nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from compression.core import validation as v
from compression.core.lazy import nn, torch
from compression.core.registry import Registry
from compression.data import DataSpec, Splits
from compression.measure import MeasureConfig
from compression.pruning import PruningConfig
from compression.quantization import QuantizationConfig
from compression.quantization.base import FLOAT32, form_of

# Metrics a non-torch runtime logs (config.RUN_METRICS includes them; absent for runtime=torch).
RT_METRICS = (
    "rt_accuracy", "rt_val_accuracy", "rt_latency_ms", "rt_latency_p90_ms",
    "rt_batch_latency_ms", "rt_speedup", "rt_batch_speedup", "rt_size_bytes",
    "rt_baseline_latency_ms", "rt_baseline_batch_latency_ms", "rt_threads", "rt_export_seconds",
    "rt_vs_eager", "rt_batch_vs_eager",
)


@dataclass
class RuntimeConfig:
    name: str = "torch"

    def __post_init__(self) -> None:
        pass


@dataclass
class OnnxConfig(RuntimeConfig):
    """Shared by runtimes that start from an ONNX or torch.export graph."""

    name: str = "onnxruntime"
    opset: int = 18  # ONNX opset the exporter targets (recorded as tag runtime_opset)
    exporter: str = "dynamo"  # torch.onnx's torch.export-based exporter | torchscript (legacy)

    def __post_init__(self) -> None:
        v.in_range("runtime.opset", self.opset, 13, None, integer=True)
        v.one_of("runtime.exporter", self.exporter, ["dynamo", "torchscript"])


@dataclass
class OrtConfig(OnnxConfig):
    """`runtime=onnxruntime`."""

    # quantization=dynamic_int8 in ORT: `torch` carries torch's own int8 model over (its
    # weights, scales and 7-bit activations: the eager accuracy exactly); `ort` is ORT's own
    # quantize_dynamic (fused 8-bit activations, its own weight scales): faster at batch 1 on
    # small models, its accuracy may differ from eager's (lenet5-structured: +0.84 pt)
    dynamic_int8: str = "torch"

    def __post_init__(self) -> None:
        super().__post_init__()
        v.one_of("runtime.dynamic_int8", self.dynamic_int8, ["torch", "ort"])


@dataclass
class DeployJob:
    """What a runtime is handed after the pipeline measured the eager model."""

    cfg: RuntimeConfig
    quant: QuantizationConfig
    pruning: PruningConfig
    measure: MeasureConfig
    threads: int  # intra-op threads while timing (the eager timing's measure.threads)
    splits: Splits
    baseline: nn.Module  # dense fp32, trained: the runtime's own speed reference
    model: nn.Module  # pruned fp32 (physically smaller where pruning removed channels)
    calibration: Callable[[int], list[torch.Tensor]]  # Session.calibration_batches
    out_dir: Path
    # torch's quantized model, as eager measured it (the reloaded artifact): static / QAT int8
    # carry its weights and scales into the runtime instead of re-calibrating
    quantized: nn.Module | None = None

    @property
    def spec(self) -> DataSpec:
        return self.splits.spec

    def fp32_source(self) -> nn.Module:
        """The fp32 model a runtime converts: for a float32-form mode, the reloaded artifact
        (the mode's values, e.g. a plug-in's rounding, as eager measured them); for any other
        form, the pruned fp32 model that the runtime quantizes or casts its own way."""
        if form_of(self.quant) == FLOAT32 and self.quantized is not None:
            return self.quantized
        return self.model


@dataclass
class Deployed:
    metrics: dict[str, float]
    tags: dict[str, str]
    file: Path  # the runtime's model file (logged as an artifact; rt_size_bytes is its size)
    onnx_file: Path | None = None  # an ONNX file MLflow can log as an onnx-flavor model
    extra_files: list[Path] = field(default_factory=list)


class Runtime(Protocol):
    def check(self, model: nn.Module, cfg: RuntimeConfig, quant: QuantizationConfig,
              pruning: PruningConfig, spec: DataSpec) -> None:
        """Raise a one-line ConfigError, before training, when this runtime cannot run the
        model (an untrained fp32 instance) with this quantization mode and pruning method."""
        ...

    def deploy(self, job: DeployJob) -> Deployed | None:
        """Build, evaluate and time the runtime's file; None for runtime=torch."""
        ...


RUNTIMES: Registry[Runtime] = Registry("runtime.name")
