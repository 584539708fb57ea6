"""`none` and `dynamic_int8`."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from compression import validation as v
from compression.quantization import _torch_ao
from compression.quantization.base import QUANTIZERS, CalibrationSession, QuantizationConfig


class NoQuantization:
    def quantize(self, model: nn.Module, cfg: QuantizationConfig, session: CalibrationSession
                 ) -> nn.Module:
        return model

    def skeleton(self, model: nn.Module, cfg: QuantizationConfig) -> nn.Module:
        return model

    def cast_input(self, x: torch.Tensor) -> torch.Tensor:
        return x


QUANTIZERS.register("none", QuantizationConfig)(NoQuantization())


@dataclass
class DynamicInt8Config(QuantizationConfig):
    mode: str = "dynamic_int8"
    engine: str = "x86"
    layers: list[str] = field(default_factory=lambda: ["linear"])

    def __post_init__(self) -> None:
        v.one_of("quantization.engine", self.engine, _torch_ao.ENGINES)
        for layer in v.string_list("quantization.layers", self.layers):
            v.one_of("quantization.layers", layer, sorted(_torch_ao.LAYER_TYPES))


class DynamicInt8:
    def quantize(self, model: nn.Module, cfg: DynamicInt8Config, session: CalibrationSession
                 ) -> nn.Module:
        return _torch_ao.quantize_dynamic_int8(copy.deepcopy(model), cfg.layers, cfg.engine)

    def skeleton(self, model: nn.Module, cfg: DynamicInt8Config) -> nn.Module:
        return _torch_ao.quantize_dynamic_int8(model, cfg.layers, cfg.engine)

    def cast_input(self, x: torch.Tensor) -> torch.Tensor:
        return x


QUANTIZERS.register("dynamic_int8", DynamicInt8Config)(DynamicInt8())
