"""Shared pieces of every quantization mode: config base, the handler interface, the registry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from compression.registry import Registry


@dataclass
class QuantizationConfig:
    mode: str = "none"

    def __post_init__(self) -> None:
        pass


class CalibrationSession(Protocol):
    """What a mode may use besides the model: training batches (static calibration, QAT)."""

    def calibration_batches(self, n: int) -> list[torch.Tensor]: ...


class Quantizer(Protocol):
    def quantize(
        self, model: nn.Module, cfg: QuantizationConfig, session: CalibrationSession
    ) -> nn.Module:
        """Return the quantized model (the fp32 `model` may be modified or reused)."""
        ...

    def skeleton(self, model: nn.Module, cfg: QuantizationConfig) -> nn.Module:
        """The module structure `quantize` produces, with arbitrary values, for loading weights
        from an artifact without calibration data."""
        ...

    def cast_input(self, x: torch.Tensor) -> torch.Tensor:
        """Convert an fp32 input batch to what the quantized model expects."""
        ...


QUANTIZERS: Registry[Quantizer] = Registry("quantization.mode")
