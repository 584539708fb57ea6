"""Measurements count what is really there."""

from __future__ import annotations

import torch
from torch import nn

from compression.measure import (
    dead_rows,
    effective_flops,
    flops_per_layer,
    latency_side_by_side,
    layer_stats,
    peak_rss_mb,
    sparsity,
)
from compression.quantization import QUANTIZERS


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2)).eval()


def test_sparsity_counts_exact_zeros_in_linear_and_conv_weights_only() -> None:
    net = _net()
    with torch.no_grad():
        net[1].weight[:, :4] = 0  # 16 of 32
        net[1].bias.zero_()  # biases don't count
    rows = layer_stats(net)
    assert sparsity(rows) == 16 / 40
    assert sum(r.params for r in rows) == 8 * 4 + 4 + 4 * 2 + 2
    # fc1: 16 nonzero weights, zero bias; fc2: 8 weights + 2 biases, all nonzero (random init)
    assert sum(r.nonzero_params for r in rows) == 16 + 8 + 2


def test_quantized_layers_are_counted_through_their_accessors() -> None:
    cfg = QUANTIZERS.build_config({"mode": "dynamic_int8"})
    q = QUANTIZERS.get("dynamic_int8").handler.quantize(_net(), cfg, None).model
    rows = layer_stats(q)
    assert [r.type for r in rows] == ["LinearReLU", "Linear"]  # fc1+ReLU run as one kernel
    assert rows[0].bytes == 8 * 4 * 1 + 4 * 4  # int8 weight, fp32 bias


def test_packed_low_bit_layers_count_their_packed_bytes_not_the_fp32_view() -> None:
    from compression.quantization.lowbit_modules import lowbit_from

    fc = nn.Linear(64, 8)
    layer = lowbit_from(fc, 4, 32)
    layer.load_float(fc.weight.detach(), fc.bias.detach())
    [row] = layer_stats(nn.Sequential(layer))
    # 512 4-bit codes in 256 bytes, 8 x 2 fp16 group scales, 8 fp32 biases
    assert row.bytes == 512 // 2 + 8 * 2 * 2 + 8 * 4
    assert row.weight_numel == 512  # still counted as a 64 x 8 weight


def test_flops_per_layer_and_effective_flops() -> None:
    net = _net()
    total, per_layer = flops_per_layer(net, torch.zeros(1, 8))
    assert per_layer == {"1": 2 * 8 * 4, "3": 2 * 4 * 2} and total == 64 + 16
    with torch.no_grad():
        net[1].weight[:2] = 0  # half of layer 1
    assert effective_flops(total, per_layer, layer_stats(net)) == 80 - 32


def test_latency_and_memory_are_measured() -> None:
    net = _net()
    lat = latency_side_by_side({"a": (net, torch.zeros(1, 8)), "b": (net, torch.zeros(9, 8))},
                               warmup=2, repeats=7)
    assert lat["a"].samples == 7 and 0 < lat["a"].median_ms <= lat["a"].p90_ms
    assert (peak_rss_mb() or 0) > 10


def test_dead_rows_counts_all_zero_rows_of_every_layer() -> None:
    model = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4), nn.Flatten(), nn.Linear(4, 6), nn.ReLU(),
                          nn.Linear(6, 3))
    assert dead_rows(model) == {"0": (0, 4), "2": (0, 6), "4": (0, 3)}
    with torch.no_grad():
        model[0].weight[1] = 0  # a depthwise channel (one 3x3 filter)
        model[4].weight[1] = 0
        model[4].weight[2, :5] = 0  # one weight left: not dead
        model[2].weight[0] = 0
        model[2].weight[3] = 0
    assert dead_rows(model) == {"0": (1, 4), "2": (2, 6), "4": (1, 3)}
    assert dead_rows(nn.Sequential(nn.ReLU())) == {}


def test_peak_rss_is_measured_per_window() -> None:
    """The peak is reset per run: a large allocation of an earlier window does not count."""
    import mmap

    from compression.measure import peak_rss_resettable, reset_peak_rss

    assert peak_rss_resettable()  # Linux: /proc/self/clear_refs
    reset_peak_rss()
    size = 256 << 20
    buf = mmap.mmap(-1, size)  # mapped and touched, then unmapped: resident only meanwhile
    for i in range(0, size, 4096):
        buf[i] = 1
    buf.close()
    first = peak_rss_mb()
    assert reset_peak_rss()
    second = peak_rss_mb()
    assert first is not None and second is not None
    assert first - second > 200  # the earlier window's 256 MiB is gone from the new peak
