"""Entropy codecs applied to whole byte streams of the artifact (`export.codec`).

Each codec is a pair of functions registered in CODECS. `decode` takes the expected decoded size
and refuses anything larger, so a tampered file cannot make the loader allocate without bound.
lzma is used in its raw form (no .xz container: ~60 bytes saved per stream) with fixed filters.
zstd comes from the `zstandard` package (pinned): Python 3.14's standard `compression.zstd`
cannot be imported here, since this project's own package is also named `compression`.
"""

from __future__ import annotations

import io
import lzma
from collections.abc import Callable
from dataclasses import dataclass

from compression.artifact.coding import huffman
from compression.core.registry import Registry


@dataclass(frozen=True)
class Codec:
    encode: Callable[[bytes], bytes]
    decode: Callable[[bytes, int], bytes]  # (coded, decoded size) -> decoded


def _check(out: bytes, size: int) -> bytes:
    if len(out) != size:
        raise ValueError(f"decoded {len(out)} bytes, the header says {size}")
    return out


_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 6}]  # 9|extreme: ~1% smaller, 20x slower


def _lzma_encode(data: bytes) -> bytes:
    return lzma.compress(data, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)


def _lzma_decode(data: bytes, size: int) -> bytes:
    d = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
    return _check(d.decompress(data, max_length=size + 1), size)


def zstd_available() -> bool:
    try:
        import zstandard  # noqa: F401
    except ImportError:
        return False
    return True


def _zstd_encode(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor(level=19, write_checksum=False).compress(data)


def _zstd_decode(data: bytes, size: int) -> bytes:
    import zstandard

    # A reader, not decompress(): a frame's claimed content size is never trusted for allocation.
    with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)) as reader:
        return _check(reader.read(size + 1), size)


def _huffman_decode(data: bytes, size: int) -> bytes:
    return _check(huffman.decode(data, max_len=size), size)


def _none_decode(data: bytes, size: int) -> bytes:
    return _check(data, size)


CODECS: Registry[Codec] = Registry("export.codec")
CODECS.add("none", Codec(lambda b: b, _none_decode))
CODECS.add("huffman", Codec(huffman.encode, _huffman_decode))
CODECS.add("lzma", Codec(_lzma_encode, _lzma_decode))
CODECS.add("zstd", Codec(_zstd_encode, _zstd_decode))
