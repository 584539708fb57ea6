"""Shared pieces of every quantization mode: config base, the handler interface, the registry."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch
from torch import nn

from compression.registry import Registry

if TYPE_CHECKING:  # a runtime import would cycle: pruning -> export -> quantization
    from compression.pruning.base import MaskSet


@dataclass
class QuantizationConfig:
    mode: str = "none"

    def __post_init__(self) -> None:
        pass


class QuantSession(Protocol):
    """What a mode may use besides the model (implemented by `compression.pipeline.Session`):
    training batches (static calibration), fine-tuning with the pruning masks kept applied (QAT),
    `layer_extra`, where a mode records per-layer figures (e.g. quantization error) that end up
    as columns of the per-layer CSV, and `extra_metrics`, merged into the run's metrics."""

    masks: MaskSet
    layer_extra: dict[str, dict[str, float]]
    extra_metrics: dict[str, float]

    def calibration_batches(self, n: int) -> list[torch.Tensor]: ...

    def finetune(self, model: nn.Module, masks: MaskSet | None = None, epochs: int | None = None,
                 lr: float | None = None) -> None: ...


class Quantizer(Protocol):
    def check(self, model: nn.Module, cfg: QuantizationConfig) -> None:
        """Raise a one-line ConfigError if this mode cannot handle `model` (an untrained fp32
        instance); called before any training so bad combinations fail fast."""
        ...

    def quantize(self, model: nn.Module, cfg: QuantizationConfig, session: QuantSession
                 ) -> nn.Module:
        """Return the quantized model; the fp32 `model` is left unchanged."""
        ...

    def skeleton(self, model: nn.Module, cfg: QuantizationConfig, example: torch.Tensor
                 ) -> nn.Module:
        """The module structure `quantize` produces, with arbitrary values, for loading weights
        from an artifact without calibration data. `example` is one fp32 input batch."""
        ...

    def cast_input(self, x: torch.Tensor) -> torch.Tensor:
        """Convert an fp32 input batch to what the quantized model expects."""
        ...


class Passthrough:
    """Defaults for modes that accept any model and take fp32 inputs."""

    def check(self, model: nn.Module, cfg: QuantizationConfig) -> None:
        return None

    def cast_input(self, x: torch.Tensor) -> torch.Tensor:
        return x


QUANTIZERS: Registry[Quantizer] = Registry("quantization.mode")


def record_weight_error(session: QuantSession | None, layer: str, ref: torch.Tensor,
                        approx: torch.Tensor) -> None:
    """Store the layer's weight quantization error (SQNR, MSE) for the per-layer CSV, and the
    worst layer's SQNR as the run metric `quant_sqnr_db_min` (sweeps can sort by it). Without a
    session (modes that need no calibration, used outside the pipeline) there is nowhere to
    record it."""
    from compression.quantization.affine import weight_error

    if session is None:
        return
    error = weight_error(ref, approx)
    session.layer_extra.setdefault(layer, {}).update(error)
    if math.isfinite(error["quant_sqnr_db"]):
        worst = session.extra_metrics.get("quant_sqnr_db_min", math.inf)
        session.extra_metrics["quant_sqnr_db_min"] = min(worst, error["quant_sqnr_db"])


def record_engine_choice(session: QuantSession | None, cfg: QuantizationConfig, engine: str,
                         scores: dict[str, float]) -> None:
    """`engine=auto` resolved: the config takes the chosen engine (the artifact records it, so
    the model reloads with the same kernels), and each timed candidate's score (geometric mean
    over batch 1 and a calibration batch of its median latency) becomes the metric
    `quant_auto_<engine>_ms`."""
    cfg.engine = engine  # type: ignore[attr-defined]
    if session is not None:
        for name, ms in scores.items():
            session.extra_metrics[f"quant_auto_{name}_ms"] = ms
