"""Low-bit weights: error shrinks with bits, ternary is {-1, 0, +1} x absmean, packed layers
compute what their dequantized weight says, zeros stay zeros, QAT gradients pass through."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compression.quantization import affine
from compression.quantization.lowbit_modules import (
    LowBitConv2d,
    LowBitLinear,
    dequantize_weight,
    fake_quantize,
    lowbit_from,
    quantize_weight,
)


def _w(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def test_error_shrinks_about_6db_per_bit() -> None:
    w = _w(64, 96)
    sqnr = {}
    for bits in range(2, 9):
        q, s = quantize_weight(w, bits, 32)
        sqnr[bits] = affine.sqnr_db(w, dequantize_weight(q, s, w.shape, 32))
    gains = [sqnr[b + 1] - sqnr[b] for b in range(3, 8)]
    assert all(4.5 < g < 7.5 for g in gains), sqnr


def test_ternary_is_absmean_scaled_sign() -> None:
    w = _w(8, 64)
    q, scales = quantize_weight(w, "ternary", 64)  # one group per row
    assert set(q.unique().tolist()) <= {-1, 0, 1}
    assert torch.allclose(scales.float(), w.abs().mean(1, keepdim=True), rtol=1e-3)


def test_ternary_scale_ignores_pruned_zeros_and_padding() -> None:
    w = _w(8, 70)
    w[torch.rand_like(w) < 0.9] = 0  # 90% pruned; 70 = 2 groups of 32 + 6 (padded)
    q, scales = quantize_weight(w, "ternary", 32)
    groups = torch.nn.functional.pad(w, (0, 26)).view(8, 3, 32)
    nonzero_mean = groups.abs().sum(-1) / (groups != 0).sum(-1).clamp(min=1)
    kept = nonzero_mean > 0
    assert torch.allclose(scales.float()[kept], nonzero_mean[kept], rtol=1e-3)
    assert (q[w == 0] == 0).all()  # pruned zeros stay zero
    # the kept weights are approximated, not collapsed to a tiny step
    assert affine.sqnr_db(w, dequantize_weight(q, scales, w.shape, 32)) > 5


def test_groups_pad_the_last_one() -> None:
    w = _w(5, 70)  # 70 = 2 groups of 32 + 6
    q, scales = quantize_weight(w, 4, 32)
    assert scales.shape == (5, 3) and scales.dtype == torch.float16
    assert q.shape == w.shape and int(q.abs().max()) <= 7


def test_packed_layers_compute_with_their_dequantized_weight() -> None:
    lin, conv = nn.Linear(70, 9), nn.Conv2d(3, 4, 3, padding=1, stride=2)
    for layer, x, op in [(lin, _w(2, 70), F.linear), (conv, _w(2, 3, 9, 9), None)]:
        packed = lowbit_from(layer, 3, 32)
        approx = packed.load_float(layer.weight, layer.bias)
        assert isinstance(packed, LowBitLinear | LowBitConv2d)
        expected = (F.linear(x, approx, layer.bias) if op else
                    F.conv2d(x, approx, layer.bias, stride=2, padding=1))
        assert torch.allclose(packed(x), expected, atol=1e-6)
        assert packed.packed.numel() == -(-layer.weight.numel() * 3 // 8)


@pytest.mark.parametrize("bits", [2, 4, 5, "ternary"])
def test_zeros_stay_zeros(bits: int | str) -> None:
    w = _w(16, 64) * (torch.rand(16, 64, generator=torch.Generator().manual_seed(1)) > 0.9)
    layer = nn.Linear(64, 16)
    layer.weight.data.copy_(w)
    packed = lowbit_from(layer, bits, 32)
    approx = packed.load_float(layer.weight, layer.bias)
    assert torch.equal(approx[w == 0], torch.zeros(int((w == 0).sum())))
    # 90% zeros: most packed bytes are zero too, which the bitmask encoding then drops.
    assert float((packed.packed == 0).float().mean()) > 0.3


def test_fake_quantize_passes_gradients_straight_through() -> None:
    w = _w(4, 32).requires_grad_()
    fake_quantize(w, 4, 32).sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))
