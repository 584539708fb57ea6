"""Position codings and entropy codecs round-trip bit-exactly: random sparsity patterns, empty,
dense and 1-element tensors, every dtype the exporter stores."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from compression.artifact.coding import bits as B
from compression.artifact.coding import huffman, positions
from compression.artifact.coding.codecs import CODECS

KINDS = positions.KINDS


def _sparse(shape, density: float, dtype=torch.float32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if dtype.is_floating_point:
        t = torch.randn(shape, generator=g).to(dtype)
    else:
        t = torch.randint(-100, 100, shape, generator=g).to(dtype)
    return t * (torch.rand(shape, generator=g) < density).to(dtype)


CASES = [
    ((300, 784), 0.05), ((300, 784), 0.5), ((64, 3, 3, 3), 0.2), ((1000,), 0.01),
    ((17, 5), 1.0),  # dense
    ((40, 40), 0.0),  # all zeros
    ((0,), 0.5), ((3, 0), 0.5),  # empty
    ((1,), 1.0), ((1,), 0.0), ((), 1.0),  # one element, a 0-d tensor
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape, density", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.int8, torch.uint8])
@pytest.mark.parametrize("pack", [True, False])
def test_every_position_coding_roundtrips_exactly(kind, shape, density, dtype, pack) -> None:
    t = _sparse(shape, density, dtype, seed=len(shape) + int(density * 100))
    if dtype == torch.uint8:
        t = t.abs()
    info, streams = positions.encode(kind, t, pack=pack)
    out = positions.decode(info, streams, dtype)
    assert out.dtype == t.dtype and out.shape == t.shape
    # Bit-exact, compared as raw bytes; the one exception by design: a pruned -0.0 (what
    # masking a negative weight leaves) is a zero and reloads as +0.0 from a sparse coding.
    expected = t if kind == "dense" else torch.where(t == 0, torch.zeros_like(t), t)
    assert torch.equal(_bytes(out), _bytes(expected))


def _bytes(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().flatten().view(torch.uint8)


@pytest.mark.parametrize("kind", ["bitmask", "delta", "csr"])
def test_a_nonzero_fill_is_what_pruned_positions_hold(kind) -> None:
    """Affine int8: a pruned weight holds the zero point (per channel here), not 0."""
    zp = torch.tensor([3, -2, 0, 7], dtype=torch.int8).view(4, 1)
    t = _sparse((4, 50), 0.1, torch.int8, seed=5)
    t = torch.where(t == 0, zp.expand(4, 50), t)
    info, streams = positions.encode(kind, t, zp)
    assert info["n"] <= int((t != zp).sum()) + 50  # pruned positions are not stored
    assert torch.equal(positions.decode(info, streams, torch.int8, zp), t)


@pytest.mark.parametrize("seed", range(5))
def test_delta_fillers_bridge_long_gaps(seed) -> None:
    t = _sparse((5000,), 0.003, seed=seed)
    for k in (1, 2, 3, 8):
        info, streams = positions.encode("delta", t, gap_bits=k)
        assert info["k"] == k and info["n"] >= int((t != 0).sum())
        assert torch.equal(positions.decode(info, streams, t.dtype), t)


def test_delta_at_95_percent_beats_a_bitmask_and_picks_a_few_gap_bits() -> None:
    g = torch.Generator().manual_seed(0)  # 4-bit k-means codes (0 = pruned) at 95% sparsity
    codes = torch.randint(1, 17, (300, 784), generator=g, dtype=torch.uint8)
    t = codes * (torch.rand(300, 784, generator=g) < 0.05)
    size = {k: sum(s.numel() * s.element_size() for s in positions.encode(k, t)[1].values())
            for k in KINDS}
    assert size["delta"] < size["csr"] < size["bitmask"] < size["dense"]
    assert 4 <= positions.encode("delta", t)[0]["k"] <= 6  # Han: 4-5 bit relative indices


def test_integer_values_pack_to_the_bits_their_range_needs() -> None:
    codes = torch.randint(1, 17, (1000,), dtype=torch.uint8)  # kmeans 4-bit codes, 0 = pruned
    info, streams = positions.encode("dense", codes)
    assert info["vb"] == 4 and info["vo"] == 1
    assert streams["::values"].numel() == 500


@pytest.mark.parametrize("bits", [1, 3, 4, 5, 7, 8, 13])
def test_bit_packing_roundtrips(bits) -> None:
    v = np.random.default_rng(bits).integers(0, 1 << bits, 1001)
    packed = B.pack(v, bits)
    assert len(packed) == -(-1001 * bits // 8)
    assert np.array_equal(B.unpack(packed, bits, 1001), v)


STREAMS = {
    "empty": b"", "one byte": b"\x07", "one symbol repeated": b"\x05" * 999,
    "random": os.urandom(4096), "all 256 symbols": bytes(range(256)) * 3,
    "geometric": bytes(np.random.default_rng(0).geometric(0.4, 20000).clip(0, 255)
                       .astype(np.uint8)),
    # Fibonacci-like frequencies force code lengths past 15 bits before limiting
    "skewed": b"".join(bytes([i]) * int(1.7 ** i) for i in range(22)),
}


@pytest.mark.parametrize("codec", sorted(CODECS))
@pytest.mark.parametrize("name", sorted(STREAMS))
def test_every_codec_roundtrips(codec, name) -> None:
    data = STREAMS[name]
    assert CODECS[codec].decode(CODECS[codec].encode(data), len(data)) == data


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_a_codec_refuses_more_bytes_than_the_header_says(codec) -> None:
    data = bytes(1000)
    with pytest.raises(ValueError):
        CODECS[codec].decode(CODECS[codec].encode(data), 10)


def test_huffman_is_near_the_entropy_and_its_codebook_is_small() -> None:
    rng = np.random.default_rng(1)
    sym = rng.choice(16, 50000, p=np.r_[[0.5], np.full(15, 0.5 / 15)]).astype(np.uint8)
    p = np.bincount(sym, minlength=16) / len(sym)
    entropy_bytes = -(p[p > 0] * np.log2(p[p > 0])).sum() * len(sym) / 8
    coded = huffman.encode(sym.tobytes())
    assert len(coded) < 1.03 * entropy_bytes + 40
    assert len(huffman.encode(b"\x00\x01" * 10)) <= 3 + 2 + 3 + 3  # count, book, bits


def test_huffman_code_lengths_are_limited_to_15_bits() -> None:
    freq = np.zeros(256, dtype=np.int64)
    freq[:30] = [int(1.7 ** i) + 1 for i in range(30)]
    assert huffman.limited_lengths(freq).max() <= huffman.MAX_LEN
    assert huffman._lengths(freq).max() > huffman.MAX_LEN  # the case the limit exists for


def test_corrupt_huffman_streams_raise() -> None:
    coded = huffman.encode(bytes(range(50)) * 20)
    with pytest.raises(ValueError):
        huffman.decode(coded[: len(coded) // 2])
