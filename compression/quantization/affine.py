"""The affine (uniform) quantization mapping, written out, plus the error measures we log.

    scale      = (f_max - f_min) / (q_max - q_min)
    zero_point = q_min - round(f_min / scale)
    q          = clamp(round(f / scale) + zero_point, q_min, q_max)
    f'         = (q - zero_point) * scale

The range is first widened to include 0 (f_min <= 0 <= f_max) so that 0.0 maps to an integer
exactly: pruned zeros stay zeros after quantization. The symmetric variant fixes zero_point = 0
and scale = max|f| / q_max over a range [-q_max, q_max]. torch.ao's observers and
`torch.quantize_per_tensor` use the same formulas (tests check ours against the latter).
Everything broadcasts, so per-tensor, per-channel and per-group parameters share one code path.
"""

from __future__ import annotations

import math

from compression.core.lazy import torch

EPS = 2.0**-23  # float32's eps, the smallest scale: keeps all-zero groups finite


def affine_qparams(
    f_min: torch.Tensor, f_max: torch.Tensor, q_min: int, q_max: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero_point) mapping [f_min, f_max] onto the integers [q_min, q_max]."""
    f_min = torch.clamp(f_min, max=0.0)
    f_max = torch.clamp(f_max, min=0.0)
    scale = torch.clamp((f_max - f_min) / (q_max - q_min), min=EPS)
    zero_point = torch.clamp(q_min - torch.round(f_min / scale), q_min, q_max)
    return scale, zero_point.to(torch.int64)


def symmetric_qparams(absmax: torch.Tensor, q_max: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero_point=0) mapping [-absmax, absmax] onto [-q_max, q_max]."""
    scale = torch.clamp(absmax / q_max, min=EPS)
    return scale, torch.zeros_like(scale, dtype=torch.int64)


def quantize(
    f: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, q_min: int, q_max: int
) -> torch.Tensor:
    """Integers (int64) q = clamp(round(f / scale) + zero_point, q_min, q_max)."""
    return torch.clamp(torch.round(f / scale) + zero_point, q_min, q_max).to(torch.int64)


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    return (q - zero_point).to(scale.dtype) * scale


def mse(ref: torch.Tensor, approx: torch.Tensor) -> float:
    return float(((ref.float() - approx.float()) ** 2).mean())


def sqnr_db(ref: torch.Tensor, approx: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB (higher is better; +inf when exact). Each bit
    of a uniform quantizer adds about 6 dB, so 8-bit weights land near 40-50 dB."""
    noise = float(((ref.float() - approx.float()) ** 2).sum())
    signal = float((ref.float() ** 2).sum())
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(max(signal, 1e-30) / noise)


def weight_error(ref: torch.Tensor, approx: torch.Tensor) -> dict[str, float]:
    """The per-layer columns of the layer CSV: SQNR (dB) and mean squared error."""
    return {"quant_sqnr_db": sqnr_db(ref, approx), "quant_mse": mse(ref, approx)}
