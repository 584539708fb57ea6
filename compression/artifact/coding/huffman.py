"""Canonical Huffman coding of a byte stream (symbols 0..255), as Deep Compression codes its
weight-index and relative-position streams.

Stored form: a varint symbol count, the codebook, then the MSB-first bitstream. The codebook is
canonical, so only each used symbol's code length is stored: a varint count of used symbols, the
used symbols as a 256-bit presence mask or as a byte list (whichever is shorter), and their
lengths packed in 4 bits (code lengths are limited to 15 bits by flattening the rarest
frequencies, so one table lookup of 15 bits decodes any symbol).
"""

from __future__ import annotations

import heapq

from compression.artifact.coding import bits as B
from compression.core.lazy import np

MAX_LEN = 15


# ------------------------------------------------------------------------------ varints
def put_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def get_varint(buf: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return n, pos


# ------------------------------------------------------------------------------ code lengths
def _lengths(freq: np.ndarray) -> np.ndarray:
    """Huffman code length of each symbol with freq > 0 (0 for unused symbols)."""
    used = np.flatnonzero(freq)
    lengths = np.zeros(256, dtype=np.int64)
    if len(used) == 1:
        lengths[used] = 1  # a lone symbol still needs one bit per occurrence
        return lengths
    heap = [(int(freq[s]), int(s), [int(s)]) for s in used]
    heapq.heapify(heap)
    while len(heap) > 1:
        f1, t1, s1 = heapq.heappop(heap)
        f2, t2, s2 = heapq.heappop(heap)
        for s in s1 + s2:
            lengths[s] += 1
        heapq.heappush(heap, (f1 + f2, min(t1, t2), s1 + s2))
    return lengths


def limited_lengths(freq: np.ndarray) -> np.ndarray:
    """Code lengths of at most MAX_LEN bits: rare symbols' frequencies are raised (a little
    coding efficiency lost on skewed streams) until the tree is shallow enough."""
    freq = freq.astype(np.int64)
    floor = 0
    while True:
        lengths = _lengths(np.where(freq > 0, np.maximum(freq, floor), 0))
        if lengths.max() <= MAX_LEN:
            return lengths
        floor = max(1, floor * 2, int(freq.sum()) >> MAX_LEN)


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical code values: symbols sorted by (length, symbol) take consecutive codes."""
    codes = np.zeros(256, dtype=np.int64)
    code, prev = 0, 0
    for s in sorted(np.flatnonzero(lengths), key=lambda s: (lengths[s], s)):
        code <<= int(lengths[s]) - prev
        codes[s], prev = code, int(lengths[s])
        code += 1
    return codes


# ------------------------------------------------------------------------------ codebook
def _write_book(lengths: np.ndarray) -> bytes:
    used = np.flatnonzero(lengths)
    mask = np.packbits(lengths > 0).tobytes()
    listed = bytes(used.astype(np.uint8))
    which = b"\x00" + mask if len(mask) < len(listed) else b"\x01" + listed
    return put_varint(len(used)) + which + B.pack(lengths[used], 4).tobytes()


def _read_book(buf: bytes, pos: int) -> tuple[np.ndarray, int]:
    n_used, pos = get_varint(buf, pos)
    kind, pos = buf[pos], pos + 1
    if kind == 0:
        used = np.flatnonzero(np.unpackbits(np.frombuffer(buf, np.uint8, 32, pos)))
        pos += 32
    else:
        used = np.frombuffer(buf, np.uint8, n_used, pos).astype(np.int64)
        pos += n_used
    if len(used) != n_used:
        raise ValueError("corrupt Huffman codebook")
    nbytes = -(-n_used * 4 // 8)
    lengths = np.zeros(256, dtype=np.int64)
    lengths[used] = B.unpack(np.frombuffer(buf, np.uint8, nbytes, pos), 4, n_used)
    if n_used and (lengths[used].min() < 1):
        raise ValueError("corrupt Huffman codebook")
    return lengths, pos + nbytes


# ------------------------------------------------------------------------------ encode / decode
def encode(data: bytes) -> bytes:
    sym = np.frombuffer(data, dtype=np.uint8)
    head = put_varint(len(sym))
    if not len(sym):
        return head
    lengths = limited_lengths(np.bincount(sym, minlength=256))
    codes = canonical_codes(lengths)
    out = [head, _write_book(lengths)]
    chunk = 1 << 18  # bounds the (symbols x bits) working arrays; the bitstream continues
    bitstreams = []
    for start in range(0, len(sym), chunk):
        s = sym[start:start + chunk]
        n_bits, code = lengths[s], codes[s]
        ends = np.cumsum(n_bits)
        owner = np.repeat(np.arange(len(s)), n_bits)
        j = np.arange(ends[-1]) - np.repeat(ends - n_bits, n_bits)  # bit index within its code
        bitstreams.append(((code[owner] >> (n_bits[owner] - 1 - j)) & 1).astype(np.uint8))
    out.append(np.packbits(np.concatenate(bitstreams)).tobytes())
    return b"".join(out)


def decode(blob: bytes, max_len: int | None = None) -> bytes:
    n, pos = get_varint(blob, 0)
    if max_len is not None and n > max_len:
        raise ValueError(f"Huffman stream claims {n} symbols, more than the {max_len} expected")
    if not n:
        return b""
    lengths, pos = _read_book(blob, pos)
    codes = canonical_codes(lengths)
    # One lookup per symbol: every 15-bit window starting with a symbol's code maps to it.
    sym_of = np.zeros(1 << MAX_LEN, dtype=np.int64)
    len_of = np.zeros(1 << MAX_LEN, dtype=np.int64)
    for s in np.flatnonzero(lengths):
        lo = int(codes[s]) << (MAX_LEN - int(lengths[s]))
        hi = lo + (1 << (MAX_LEN - int(lengths[s])))
        sym_of[lo:hi], len_of[lo:hi] = s, lengths[s]
    stream = np.unpackbits(np.frombuffer(blob, np.uint8, offset=pos))
    stream = np.concatenate([stream, np.zeros(MAX_LEN, np.uint8)])
    # The 15-bit window at every bit position (vectorized), then a short sequential walk.
    windows = np.zeros(len(stream) - MAX_LEN + 1, dtype=np.int64)
    for k in range(MAX_LEN):
        windows = (windows << 1) | stream[k:len(stream) - MAX_LEN + 1 + k]
    win, syms, lens = windows.tolist(), sym_of.tolist(), len_of.tolist()
    out = bytearray(n)
    p, limit = 0, len(win) - 1
    for i in range(n):
        if p > limit:
            raise ValueError("truncated Huffman stream")
        w = win[p]
        step = lens[w]
        if not step:
            raise ValueError("corrupt Huffman stream")
        out[i] = syms[w]
        p += step
    if p > limit:  # the last code ran into the padding
        raise ValueError("truncated Huffman stream")
    return bytes(out)
