"""`dynamic_int8`: int8 weights, activations quantized at run time from each batch's range.

No calibration data. Backends: `torch_ao` (fbgemm / oneDNN / QNNPACK kernels for Linear, LSTM
and GRU; Conv has none: use static_int8; Linear+ReLU pairs run as one fused kernel) and `torchao`
(Linear only; optional package). Asking a backend for a layer kind it cannot do fails before any
work. `engine: auto` (torch_ao) times the candidate engines on one training batch (and batch 1)
and keeps the fastest; without a session (no data to time on) it means x86.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from compression.core import validation as v
from compression.core.errors import ConfigError
from compression.core.lazy import LazyModule, nn, torch
from compression.quantization import _engines as names
from compression.quantization.backends import torchao as _torchao
from compression.quantization.base import (
    INT8_DYNAMIC,
    QUANTIZERS,
    SQNR,
    STORED_BITS,
    Passthrough,
    QuantizationConfig,
    Quantized,
    QuantSession,
    WeightErrors,
    engine_result,
)

ao = LazyModule("compression.quantization.backends.torch_ao")  # torch.ao: imported on first use

# backend -> layer kinds it quantizes dynamically
BACKEND_LAYERS: dict[str, list[str]] = {"torch_ao": list(names.DYNAMIC_LAYER_KINDS),
                                        "torchao": ["linear"]}


@dataclass
class DynamicInt8Config(QuantizationConfig):
    mode: str = "dynamic_int8"
    backend: str = "torch_ao"  # torch_ao (fbgemm/oneDNN/QNNPACK) | torchao (optional; Linear)
    engine: str = "x86"  # x86 | fbgemm | onednn | qnnpack | auto (fastest, timed)
    # layer kinds to quantize: linear | lstm | gru (no dynamic conv kernel)
    layers: list[str] = field(default_factory=lambda: ["linear"])

    def __post_init__(self) -> None:
        v.one_of("quantization.backend (for mode dynamic_int8)", self.backend, BACKEND_LAYERS)
        v.one_of("quantization.engine", self.engine, [*names.ENGINES, names.AUTO])
        allowed = BACKEND_LAYERS[self.backend]
        for layer in v.string_list("quantization.layers", self.layers):
            if layer not in allowed:
                raise ConfigError(
                    f"quantization.layers={layer!r} has no dynamic int8 kernel in backend "
                    f"{self.backend}; allowed: {', '.join(allowed)} (conv: use "
                    "quantization=static_int8)"
                )
        if self.backend == "torchao" and self.engine != names.DEFAULT_ENGINE:
            raise ConfigError(f"quantization.engine={self.engine} applies to backend torch_ao; "
                              "torchao picks its own kernels (leave the engine at its default)")
        if self.backend == "torchao" and not _torchao.available():
            raise ConfigError("quantization.backend=torchao needs the torchao package: "
                              f"{_torchao.INSTALL_HINT}")


class DynamicInt8(Passthrough):
    form = INT8_DYNAMIC

    def check(self, model: nn.Module, cfg: DynamicInt8Config) -> None:
        kinds = tuple(ao.DYNAMIC_LAYER_TYPES[k] for k in cfg.layers)
        if not any(isinstance(m, kinds) for m in model.modules()):
            raise ConfigError(
                f"quantization.mode=dynamic_int8: the model has no {'/'.join(cfg.layers)} "
                "layer to quantize (conv layers need quantization=static_int8)"
            )

    @staticmethod
    def _apply(model: nn.Module, cfg: DynamicInt8Config) -> nn.Module:
        backends = {
            "torch_ao": lambda m: ao.quantize_dynamic_int8(m, cfg.layers, cfg.engine),
            "torchao": _torchao.quantize_dynamic_int8,
        }
        return backends[cfg.backend](model)

    @staticmethod
    def _fastest(model: nn.Module, cfg: DynamicInt8Config, session: QuantSession | None
                 ) -> tuple[str, nn.Module, dict[str, float]]:
        """engine=auto: time each candidate engine on batch 1 and one training batch."""
        batches = session.calibration_batches(1) if session is not None else []
        if not batches:
            engine = ao.DEFAULT_ENGINE
            return engine, ao.quantize_dynamic_int8(copy.deepcopy(model), cfg.layers, engine), {}
        return ao.pick_engine(
            lambda e: ao.quantize_dynamic_int8(copy.deepcopy(model), cfg.layers, e),
            ao.auto_candidates(), [batches[0][:1], batches[0]])

    def quantize(self, model: nn.Module, cfg: DynamicInt8Config, session: QuantSession
                 ) -> Quantized:
        if cfg.backend == "torch_ao":  # kernels of the engine named (or picked): a tag
            engine, out, scores = (self._fastest(model, cfg, session) if cfg.engine == ao.AUTO
                                   else (cfg.engine, self._apply(copy.deepcopy(model), cfg), {}))
            result = engine_result(out, cfg, engine, scores)
        else:  # torchao picks its own kernels: no engine to name
            result = Quantized(self._apply(copy.deepcopy(model), cfg), cfg)
        quantized, errors = dict(result.model.named_modules()), WeightErrors()
        for name, layer in model.named_modules():
            w = getattr(quantized.get(name), "weight", None)
            w = w() if callable(w) and not isinstance(w, torch.Tensor) else w
            # torch.ao: a quantized tensor; torchao: a tensor subclass; both dequantize()
            if isinstance(layer, nn.Linear) and isinstance(w, torch.Tensor) and (
                    w.is_quantized or type(w) not in (torch.Tensor, nn.Parameter)):
                errors.record(name, layer.weight.detach(), w.dequantize())
        return errors.attach(result)

    def skeleton(self, model: nn.Module, cfg: DynamicInt8Config, example: torch.Tensor
                 ) -> nn.Module:
        return self._apply(model, cfg)


QUANTIZERS.register("dynamic_int8", DynamicInt8Config,
                    metrics=(*SQNR, *STORED_BITS))(DynamicInt8())
