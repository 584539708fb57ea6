"""The affine mapping, checked by hand and against torch's own quantize_per_tensor."""

from __future__ import annotations

import math

import torch

from compression.quantization import affine


def test_affine_qparams_follow_the_formula() -> None:
    # f in [-1, 3] onto [0, 255]: scale = 4/255, zero_point = 0 - round(-1 / scale) = 64.
    scale, zp = affine.affine_qparams(torch.tensor(-1.0), torch.tensor(3.0), 0, 255)
    assert math.isclose(float(scale), 4 / 255, rel_tol=1e-6)
    assert int(zp) == 64
    q = affine.quantize(torch.tensor([-1.0, 0.0, 1.0, 3.0, 9.0]), scale, zp, 0, 255)
    assert q.tolist() == [0, 64, 128, 255, 255]  # 1.0 -> round(63.75) + 64; 9.0 clamps


def test_matches_torch_quantize_per_tensor() -> None:
    f = torch.randn(1000, generator=torch.Generator().manual_seed(0)) * 3 + 1
    scale, zp = affine.affine_qparams(f.min(), f.max(), 0, 255)
    ours = affine.quantize(f, scale, zp, 0, 255)
    theirs = torch.quantize_per_tensor(f, float(scale), int(zp), torch.quint8).int_repr()
    assert torch.equal(ours, theirs.to(torch.int64))
    back = affine.dequantize(ours, scale, zp)
    assert float((back - f).abs().max()) <= float(scale) / 2 + 1e-6


def test_range_is_widened_so_zero_is_exact() -> None:
    for lo, hi in [(0.3, 2.0), (-5.0, -0.1), (-0.7, 1.3)]:
        scale, zp = affine.affine_qparams(torch.tensor(lo), torch.tensor(hi), -128, 127)
        q = affine.quantize(torch.tensor(0.0), scale, zp, -128, 127)
        assert float(affine.dequantize(q, scale, zp)) == 0.0


def test_symmetric_qparams() -> None:
    scale, zp = affine.symmetric_qparams(torch.tensor([2.54, 0.0]), 127)
    assert torch.allclose(scale[0], torch.tensor(0.02))
    assert scale[1] > 0 and zp.tolist() == [0, 0]  # an all-zero channel stays finite


def test_error_measures() -> None:
    ref = torch.ones(100)
    assert math.isclose(affine.sqnr_db(ref, ref + 0.1), 20.0, rel_tol=1e-4)
    assert affine.sqnr_db(ref, ref) == math.inf
    assert math.isclose(affine.mse(ref, ref + 0.1), 0.01, rel_tol=1e-4)


def test_percentile_observer_clips_outliers() -> None:
    from compression.quantization._torch_ao import PercentileObserver

    x = torch.randn(10_000, generator=torch.Generator().manual_seed(0))
    x[0] = 1000.0  # one outlier would set a min-max range 300x too wide
    observer = PercentileObserver(percentile=99.9)
    observer(x)
    observer(x)  # averaged over batches
    assert 2.5 < float(observer.max_val) < 4.0
    assert -4.0 < float(observer.min_val) < -2.5
    scale, _ = observer.calculate_qparams()
    assert float(scale) < 0.05
