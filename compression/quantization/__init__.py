"""Quantization modes. Importing this package registers every mode in QUANTIZERS: each public
module here is imported (registry.discover), and registers its own (none, fp16, bf16 (cast),
dynamic_int8, static_int8, qat_int8 (torch.ao int8 kernels), lowbit (packed 2..8-bit / ternary
weights), kmeans (shared weights, Deep Compression))."""

from compression.core.registry import discover
from compression.quantization.base import (
    QUANTIZERS,
    QuantizationConfig,
    Quantized,
    Quantizer,
    QuantSession,
)

MODULES = discover(__name__, __path__)

__all__ = ["QUANTIZERS", "QuantSession", "QuantizationConfig", "Quantized", "Quantizer"]
