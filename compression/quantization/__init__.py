"""Quantization modes. Importing this package registers every built-in mode in QUANTIZERS."""

from compression.quantization import modes  # noqa: F401  (registers handlers)
from compression.quantization.base import QUANTIZERS, QuantizationConfig, Quantizer

__all__ = ["QUANTIZERS", "QuantizationConfig", "Quantizer"]
