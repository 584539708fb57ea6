"""Quantization modes. Importing this package registers every built-in mode in QUANTIZERS:
none, fp16, bf16 (cast), dynamic_int8, static_int8, qat_int8 (torch.ao int8 kernels) and
lowbit (packed 2..8-bit / ternary weights) and kmeans (shared weights, Deep Compression)."""

from compression.quantization import (  # noqa: F401  (register)
    cast,
    dynamic,
    kmeans,
    lowbit,
    qat,
    static,
)
from compression.quantization.base import QUANTIZERS, QuantizationConfig, Quantizer, QuantSession

__all__ = ["QUANTIZERS", "QuantSession", "QuantizationConfig", "Quantizer"]
