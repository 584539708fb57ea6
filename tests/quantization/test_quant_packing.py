"""Packed low-bit storage: exact round trips, real sizes, zeros packing to zero bytes."""

from __future__ import annotations

import pytest
import torch

from compression.quantization import packing


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8])
def test_round_trip_and_size(bits: int) -> None:
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    q = torch.randint(lo, hi + 1, (37, 11), generator=torch.Generator().manual_seed(bits))
    packed = packing.pack(q, bits)
    assert packed.dtype == torch.uint8
    assert packed.numel() == -(-q.numel() * bits // 8)  # e.g. two 4-bit values per byte
    assert torch.equal(packing.unpack(packed, bits, q.numel()).view_as(q).long(), q)


def test_layout_is_lsb_first_twos_complement() -> None:
    assert packing.pack(torch.tensor([1, -1]), 4).tolist() == [0xF1]
    assert packing.pack(torch.tensor([1, -1, 0, -2]), 2).tolist() == [0b10_00_11_01]
    # 3 bits straddle bytes: 3 -> bits 0-2 (011), -4 -> bits 3-5 (100), 1 -> bits 6-8 (001)
    assert packing.pack(torch.tensor([3, -4, 1]), 3).tolist() == [0b01_100_011, 0]


def test_zeros_pack_to_zero_bytes() -> None:
    assert int(packing.pack(torch.zeros(64, dtype=torch.int64), 3).sum()) == 0


def test_out_of_range_values_are_refused() -> None:
    with pytest.raises(ValueError, match="4-bit signed range"):
        packing.pack(torch.tensor([8]), 4)
