"""Shared pieces of every quantization mode: config base, the handler interface, the registry."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Container
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from compression.core.lazy import nn, torch
from compression.core.registry import Registry

if TYPE_CHECKING:  # a runtime import would cycle: pruning -> export -> quantization
    from compression.pruning.base import MaskSet


@dataclass
class QuantizationConfig:
    mode: str = "none"

    def __post_init__(self) -> None:
        pass

    def label(self) -> str:
        """The mode as a run's summary line shows it (a mode with a bit width adds it, e.g.
        `lowbit/4`, `lowbit/mixed<=3`)."""
        return self.mode


@dataclass
class Quantized:
    """What `quantize` returns: the quantized model, the config as it was carried out (e.g.
    `engine: auto` resolved to the engine picked; the artifact records this one, so the model
    reloads with the same kernels), tags for the run (e.g. quantization_engine), metrics
    (e.g. each auto candidate's timing, the worst layer's SQNR) and per-layer figures (columns
    of the per-layer CSV, e.g. each layer's weight error: `WeightErrors`). The config the run
    was asked for, logged as params, is never changed."""

    model: nn.Module
    config: QuantizationConfig
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    layer_extra: dict[str, dict[str, float]] = field(default_factory=dict)

    @classmethod
    def of(cls, out: nn.Module | Quantized, cfg: QuantizationConfig) -> Quantized:
        """A handler's result; a handler returning a bare model did nothing to resolve."""
        return out if isinstance(out, Quantized) else cls(out, cfg)


class QuantSession(Protocol):
    """What a mode may use besides the model (implemented by `compression.run.session.Session`):
    the pruning masks, training batches (static calibration) and fine-tuning with the masks kept
    applied (QAT). A mode reads from it and returns what it measured in its `Quantized`."""

    masks: MaskSet

    def calibration_batches(self, n: int) -> list[torch.Tensor]: ...

    def finetune(self, model: nn.Module, masks: MaskSet | None = None, epochs: int | None = None,
                 lr: float | None = None) -> None: ...


# What a quantized model computes with: the one thing a runtime needs to know to convert it
# (runtime/ort_quant.py, runtime/executorch.py key their conversions by form, never by mode
# name, so a plug-in mode that declares a form is converted like the built-in ones). A mode
# whose model none of these describes is OPAQUE: every runtime but torch refuses it up front.
FLOAT32 = "float32"  # the fp32 model as it is (modes that only change values, e.g. rounding)
FLOAT16 = "float16"  # parameters, buffers and inputs cast to half precision
BFLOAT16 = "bfloat16"  # the same in bfloat16
INT8_DYNAMIC = "int8_dynamic"  # torch.ao dynamic Linear: int8 weights, per-batch activations
INT8_STATIC = "int8_static"  # torch.ao quantized modules: int8 weights, fixed activation scales
WEIGHT_ONLY = "weight_only"  # packed low-bit weights with scales (stored_weight_bits), fp32 math
CODEBOOK = "codebook"  # weights looked up in a per-layer table of shared values
OPAQUE = "opaque"  # anything else


class Quantizer(Protocol):
    form: str  # one of the forms above

    def check(self, model: nn.Module, cfg: QuantizationConfig) -> None:
        """Raise a one-line ConfigError if this mode cannot handle `model` (an untrained fp32
        instance); called before any training so bad combinations fail fast."""
        ...

    def quantize(self, model: nn.Module, cfg: QuantizationConfig, session: QuantSession
                 ) -> Quantized:
        """Return the quantized model with the config as carried out, tags and metrics; the
        fp32 `model` and `cfg` are left unchanged."""
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
    """Defaults for modes that accept any model and take fp32 inputs (a mode that keeps a
    plain fp32 model sets `form = FLOAT32`, and runtimes convert it)."""

    form = OPAQUE

    def check(self, model: nn.Module, cfg: QuantizationConfig) -> None:
        return None

    def cast_input(self, x: torch.Tensor) -> torch.Tensor:
        return x


QUANTIZERS: Registry[Quantizer] = Registry("quantization.mode")
SQNR = ("quant_sqnr_db_min",)  # the metric of modes that return WeightErrors
# weight_bits: declared by modes whose every stored layer tells its width (metrics.weight_bits;
# k-means codebooks do not), so a sweep may ask for it as an objective
STORED_BITS = ("weight_bits",)


def form_of(cfg: QuantizationConfig) -> str:
    """The form of `cfg.mode`'s models (an unknown mode: the registry's one-line error)."""
    return QUANTIZERS.get(cfg.mode).handler.form


def modes_of_form(forms: Container[str]) -> list[str]:
    """The registered modes whose form is in `forms` (what a runtime lists as allowed)."""
    return [e.name for e in QUANTIZERS.entries() if e.handler.form in forms]


class WeightErrors:
    """Each layer's weight quantization error (SQNR, MSE), collected while a mode quantizes and
    returned in its result (`attach`): per-layer columns of the CSV, and the worst layer's SQNR
    as the run metric `quant_sqnr_db_min` (sweeps can sort by it)."""

    def __init__(self) -> None:
        self.layers: dict[str, dict[str, float]] = {}

    def record(self, layer: str, ref: torch.Tensor, approx: torch.Tensor) -> None:
        from compression.quantization.affine import weight_error

        self.layers[layer] = weight_error(ref, approx)

    def attach(self, result: Quantized) -> Quantized:
        """`result` with these errors added (returned for `return errors.attach(...)`)."""
        for layer, error in self.layers.items():
            result.layer_extra.setdefault(layer, {}).update(error)
        finite = [e["quant_sqnr_db"] for e in self.layers.values()
                  if math.isfinite(e["quant_sqnr_db"])]
        if finite:
            result.metrics["quant_sqnr_db_min"] = min(finite)
        return result


def engine_result(model: nn.Module, cfg: Any, engine: str, scores: dict[str, float]
                  ) -> Quantized:
    """A torch.ao int8 result: the config with the engine that ran (`auto` resolved; the
    artifact records it, so the model reloads with the same kernels), the engine as the tag
    `quantization_engine`, and for `auto` each timed candidate's score (geometric mean over
    batch 1 and a calibration batch of its median latency) as `quant_auto_<engine>_ms`."""
    return Quantized(model, dataclasses.replace(cfg, engine=engine),
                     {"quantization_engine": engine},
                     {f"quant_auto_{name}_ms": ms for name, ms in scores.items()})
