"""Bit packing of signed low-bit integers into bytes, so a 4-bit weight costs half a byte.

Format: a little-endian bitstream. Value i occupies bits [i*b, (i+1)*b) of the stream, bit k of
the stream being bit (k % 8) of byte k // 8; each value is stored as its b-bit two's complement,
so 0 packs to all-zero bits (a pruned weight costs nothing once the bytes are bitmask-encoded).
For b in {1, 2, 4, 8} no value straddles a byte and unpacking takes a shift-and-mask fast path;
the layout is the same either way.
"""

from __future__ import annotations

from compression.core.lazy import torch

_BYTE_ALIGNED = (1, 2, 4, 8)


def packed_numel(numel: int, bits: int) -> int:
    return -(-numel * bits // 8)


def pack(q: torch.Tensor, bits: int) -> torch.Tensor:
    """Signed integers in [-2^(b-1), 2^(b-1)) (any shape) -> uint8 of packed_numel(numel, b)."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    flat = q.flatten().to(torch.int64)
    if flat.numel() and (int(flat.min()) < lo or int(flat.max()) > hi):
        raise ValueError(f"values outside the {bits}-bit signed range [{lo}, {hi}]")
    u = flat & ((1 << bits) - 1)  # two's complement code, 0 -> 0
    # (n, b) bits of each code, LSB first, flattened into one stream and padded to whole bytes.
    stream = ((u[:, None] >> torch.arange(bits)) & 1).flatten()
    pad = packed_numel(flat.numel(), bits) * 8 - len(stream)
    stream = torch.nn.functional.pad(stream, (0, pad))
    return (stream.view(-1, 8) << torch.arange(8)).sum(1).to(torch.uint8)


def unpack(packed: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    """Inverse of `pack`: uint8 -> int8 tensor of `numel` signed values (flat)."""
    if bits in _BYTE_ALIGNED:
        shifts = torch.arange(0, 8, bits, dtype=torch.uint8)
        u = ((packed[:, None] >> shifts) & ((1 << bits) - 1)).flatten()[:numel]
    else:
        stream = ((packed[:, None] >> torch.arange(8, dtype=torch.uint8)) & 1).flatten()
        codes = stream[: numel * bits].view(numel, bits).to(torch.int32)
        u = (codes << torch.arange(bits, dtype=torch.int32)).sum(1)
    u = u.to(torch.int16)
    # Sign extension: codes with the top bit set are negative.
    return (u - ((u >> (bits - 1)) & 1) * (1 << bits)).to(torch.int8)
