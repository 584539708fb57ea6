"""`none`, `fp16` and `bf16`: the whole model (weights and activations) in one float dtype.

On CPUs without native half-precision arithmetic (no AVX512-FP16 / AVX512-BF16 / AMX) torch
converts to fp32 inside each kernel, so these modes halve the bytes but usually run slower than
fp32; the measured latency says which case a machine is in.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from compression.core.lazy import nn, torch
from compression.models.config import prunable_layers
from compression.quantization.base import (
    BFLOAT16,
    FLOAT16,
    FLOAT32,
    QUANTIZERS,
    SQNR,
    STORED_BITS,
    Passthrough,
    QuantizationConfig,
    Quantized,
    QuantSession,
    WeightErrors,
)


class NoQuantization(Passthrough):
    form = FLOAT32

    def quantize(self, model: nn.Module, cfg: QuantizationConfig, session: QuantSession
                 ) -> Quantized:
        return Quantized(model, cfg)

    def skeleton(self, model: nn.Module, cfg: QuantizationConfig, example: torch.Tensor
                 ) -> nn.Module:
        return model


QUANTIZERS.register("none", QuantizationConfig, metrics=STORED_BITS)(NoQuantization())


@dataclass
class Fp16Config(QuantizationConfig):
    mode: str = "fp16"


@dataclass
class Bf16Config(QuantizationConfig):
    mode: str = "bf16"


class FloatCast:
    """Casts parameters, buffers and inputs to `dtype`; logits come out in `dtype` too."""

    def __init__(self, form: str) -> None:
        # the float forms are named as torch names the dtypes; a name, so torch is imported
        # only when a model is cast
        self.dtype_name = self.form = form

    @property
    def dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype_name)

    def check(self, model: nn.Module, cfg: QuantizationConfig) -> None:
        return None

    def quantize(self, model: nn.Module, cfg: QuantizationConfig, session: QuantSession
                 ) -> Quantized:
        out = copy.deepcopy(model).to(self.dtype)
        low, errors = prunable_layers(out), WeightErrors()
        for name, layer in prunable_layers(model).items():
            errors.record(name, layer.weight.detach(), low[name].weight.detach())
        return errors.attach(Quantized(out, cfg))

    def skeleton(self, model: nn.Module, cfg: QuantizationConfig, example: torch.Tensor
                 ) -> nn.Module:
        return model.to(self.dtype)

    def cast_input(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.dtype)


QUANTIZERS.register("fp16", Fp16Config, metrics=(*SQNR, *STORED_BITS))(FloatCast(FLOAT16))
QUANTIZERS.register("bf16", Bf16Config, metrics=(*SQNR, *STORED_BITS))(FloatCast(BFLOAT16))
