"""Unsigned integers packed to `b` bits each, MSB-first within the stream (numpy's packbits
order), so a tensor of 4-bit codes costs half a byte per element and gaps of 5 bits cost 5."""

from __future__ import annotations

from compression.core.lazy import np


def width(max_value: int) -> int:
    """Bits needed for integers in [0, max_value] (at least 1)."""
    return max(1, int(max_value).bit_length())


def pack(values: np.ndarray, bits: int) -> np.ndarray:
    """Non-negative integers < 2**bits -> uint8 array of ceil(n * bits / 8) bytes."""
    v = np.asarray(values, dtype=np.uint64).ravel()
    if bits == 8:
        return v.astype(np.uint8)
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint64)
    stream = ((v[:, None] >> shifts) & np.uint64(1)).astype(np.uint8)  # (n, bits), MSB first
    return np.packbits(stream.ravel())


def unpack(packed: np.ndarray, bits: int, n: int) -> np.ndarray:
    """Inverse of `pack`: -> int64 array of `n` values."""
    packed = np.asarray(packed, dtype=np.uint8)
    if n * bits > packed.size * 8:
        raise ValueError(f"{packed.size} bytes cannot hold {n} values of {bits} bits")
    if bits == 8:
        return packed[:n].astype(np.int64)
    stream = np.unpackbits(packed, count=n * bits).reshape(n, bits).astype(np.int64)
    return stream @ (1 << np.arange(bits - 1, -1, -1, dtype=np.int64))
