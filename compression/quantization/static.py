"""`static_int8`: int8 weights and activations, activation ranges calibrated on training batches.

Runs on torch.ao's FX graph mode: Conv+BN(+ReLU) and Linear+ReLU are fused before calibration,
every Linear/Conv becomes an int8 kernel, and inputs are quantized once at the model's entry.
`engine: auto` converts with each candidate engine (x86, fbgemm, onednn: oneDNN only for
symmetric weights), times them on batch 1 and a calibration batch, and keeps the fastest; the
chosen engine replaces `auto` in the config, so the artifact records it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from compression.core import validation as v
from compression.core.errors import ConfigError
from compression.core.lazy import LazyModule, nn, torch
from compression.models.config import prunable_layers
from compression.quantization import _engines as names
from compression.quantization.base import (
    INT8_STATIC,
    QUANTIZERS,
    SQNR,
    STORED_BITS,
    QuantizationConfig,
    Quantized,
    QuantSession,
    WeightErrors,
    engine_result,
)

ao = LazyModule("compression.quantization.backends.torch_ao")  # torch.ao: imported on first use

# (engine, weight scheme) pairs the int8 kernels reject at conversion time, found by trying every
# engine x granularity x scheme on mlp, lenet5 and resnet (tests/quantization); refused up front.
UNSUPPORTED: dict[tuple[str, str], str] = {
    ("onednn", "affine"): "oneDNN's int8 kernels require weight zero_point 0; use "
                          "quantization.scheme=symmetric or engine=x86",
}


@dataclass
class Int8Config(QuantizationConfig):
    """What static and QAT int8 share: kernels (engine) and how weights are mapped."""

    backend: str = "torch_ao"
    engine: str = "x86"  # x86 | fbgemm | onednn | qnnpack | auto (fastest, timed)
    granularity: str = "channel"  # weights: one scale per output channel, or per tensor
    scheme: str = "symmetric"  # weights: symmetric (zero_point 0) or affine

    def __post_init__(self) -> None:
        v.one_of(f"quantization.backend (for mode {self.mode})", self.backend, ["torch_ao"])
        v.one_of("quantization.engine", self.engine, [*names.ENGINES, names.AUTO])
        v.one_of("quantization.granularity", self.granularity, ["channel", "tensor"])
        v.one_of("quantization.scheme", self.scheme, ["symmetric", "affine"])
        why = UNSUPPORTED.get((self.engine, self.scheme))
        if why:
            raise ConfigError(f"quantization.engine={self.engine} does not support "
                              f"quantization.scheme={self.scheme}: {why}")


@dataclass
class StaticInt8Config(Int8Config):
    mode: str = "static_int8"
    observer: str = "histogram"  # activations: minmax | histogram (MSE) | percentile
    percentile: float = 99.99  # observer=percentile: clip to [100 - p, p] percentiles
    calibration_batches: int = 16  # training batches (train.batch_size each)

    def __post_init__(self) -> None:
        super().__post_init__()
        v.one_of("quantization.observer", self.observer, names.OBSERVERS)
        v.in_range("quantization.percentile", self.percentile, 50, 100, hi_open=True)
        v.in_range("quantization.calibration_batches", self.calibration_batches, 1, None,
                   integer=True)


def check_graph_model(model: nn.Module, mode: str) -> None:
    """FX graph mode needs a traceable model with at least one Linear/Conv."""
    if not prunable_layers(model):
        raise ConfigError(f"quantization.mode={mode}: the model has no Linear/Conv layer")
    try:
        torch.fx.symbolic_trace(model)
    except Exception as e:  # data-dependent control flow etc.
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"quantization.mode={mode} needs a torch.fx-traceable model; "
            f"{type(model).__name__} is not ({first}); use dynamic_int8 or lowbit"
        ) from None


def convert(prepared: nn.Module, cfg: Int8Config, batches: list[torch.Tensor]) -> Quantized:
    """The int8 model for cfg.engine; for `auto`, the fastest candidate on `batches`."""
    if cfg.engine != ao.AUTO:
        return engine_result(ao.convert(prepared, cfg.engine), cfg, cfg.engine, {})
    engine, out, scores = ao.convert_fastest(
        prepared, ao.auto_candidates(cfg.scheme == "symmetric"), batches)
    return engine_result(out, cfg, engine, scores)


def convert_measured(prepared: nn.Module, cfg: Int8Config, batch: torch.Tensor) -> Quantized:
    """Calibrated / QAT-trained graph -> int8 model (engine auto: timed on batch 1 and `batch`),
    each layer's weight error against the float weights recorded."""
    ref = ao.float_weights(prepared)
    out = convert(prepared, cfg, [batch[:1], batch])
    return weight_errors(ref, out.model).attach(out)


def convert_skeleton(prepared: nn.Module, example: torch.Tensor, engine: str) -> nn.Module:
    """The int8 model's structure for loading an artifact: one forward pass gives the observers
    some range (any will do: the artifact's qparams replace it), then convert."""
    with torch.no_grad():
        prepared.eval()(example)
    return ao.convert(prepared, engine)


def weight_errors(ref: dict[str, torch.Tensor], quantized: nn.Module) -> WeightErrors:
    errors = WeightErrors()
    for name, w in ao.quantized_weights(quantized).items():
        if name in ref and ref[name].shape == w.shape:
            errors.record(name, ref[name], w)
    return errors


class StaticInt8:
    form = INT8_STATIC

    def qconfig(self, cfg: StaticInt8Config) -> ao.QConfig:
        return ao.ptq_qconfig(cfg.observer, cfg.percentile, cfg.granularity == "channel",
                              cfg.scheme == "symmetric", cfg.engine)

    def check(self, model: nn.Module, cfg: StaticInt8Config) -> None:
        check_graph_model(model, cfg.mode)

    def quantize(self, model: nn.Module, cfg: StaticInt8Config, session: QuantSession
                 ) -> Quantized:
        batches = session.calibration_batches(cfg.calibration_batches)
        prepared = ao.prepare_static(copy.deepcopy(model), self.qconfig(cfg), batches[0][:1],
                                     cfg.engine)
        with torch.no_grad():
            for x in batches:
                prepared(x)
        return convert_measured(prepared, cfg, batches[0])

    def skeleton(self, model: nn.Module, cfg: StaticInt8Config, example: torch.Tensor
                 ) -> nn.Module:
        prepared = ao.prepare_static(model, self.qconfig(cfg), example, cfg.engine)
        return convert_skeleton(prepared, example, cfg.engine)

    def cast_input(self, x: torch.Tensor) -> torch.Tensor:
        return x  # the model quantizes its own input


QUANTIZERS.register("static_int8", StaticInt8Config,
                    metrics=(*SQNR, *STORED_BITS))(StaticInt8())
