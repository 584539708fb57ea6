"""Where the nonzeros of a tensor are, coded four ways; the exporter keeps the smallest.

- `dense`: every element, no positions;
- `bitmask`: one bit per element (1 = stored), then the stored values;
- `delta`: Deep Compression's relative indices: the gap before each stored element (zeros
  skipped since the previous one) in `k` bits; a gap too long for `k` bits is bridged by filler
  entries (an element that holds the fill value, stored like any other), so `k` = 4-5 bits
  suffices at 90-95% sparsity where a bitmask spends 10-20 bits per nonzero;
- `csr`: per-row counts plus column indices of the tensor viewed as (shape[0], rest).

"Zero" is the fill value (0, or an affine tensor's zero point, broadcastable). Integer values
(quantized ints, k-means codes) are stored packed to the bits their range needs (`vb` bits after
subtracting `vo`), or as they are (`pack=False`, better for a byte-level entropy coder).
Every coder maps (tensor, fill) -> (info, {suffix: uint8 / value tensor}) and back, exactly.
"""

from __future__ import annotations

from collections.abc import Iterator

from compression.artifact.coding import bits as B
from compression.core.lazy import np, torch

KINDS = ("dense", "bitmask", "delta", "csr")
MAX_GAP_BITS = 16

Streams = dict[str, "torch.Tensor"]


def _u8(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.uint8))


# ---------------------------------------------------------------------------- values
def _value_bits(v: torch.Tensor) -> tuple[int, int] | None:
    """(bits, offset) when integer values pack narrower than their dtype, else None."""
    if v.dtype.is_floating_point or v.dtype.is_complex or v.dtype == torch.bool or not v.numel():
        return None
    lo, hi = int(v.min()), int(v.max())
    bits = B.width(hi - lo)
    return (bits, lo) if bits < 8 * v.element_size() else None


def encode_values(v: torch.Tensor, pack: bool) -> tuple[dict, torch.Tensor]:
    packed = _value_bits(v) if pack else None
    if packed is None:
        return {}, v.contiguous()
    bits, lo = packed
    return {"vb": bits, "vo": lo}, _u8(B.pack((v.to(torch.int64) - lo).numpy(), bits))


def decode_values(info: dict, stored: torch.Tensor, n: int, dtype: torch.dtype) -> torch.Tensor:
    if "vb" not in info:
        if stored.numel() != n:
            raise ValueError(f"{stored.numel()} values stored, {n} expected")
        return stored.flatten()
    ints = B.unpack(stored.numpy(), int(info["vb"]), n) + int(info["vo"])
    return torch.from_numpy(ints).to(dtype)


def value_bits_per_entry(v: torch.Tensor, pack: bool) -> int:
    packed = _value_bits(v) if pack else None
    return packed[0] if packed else 8 * v.element_size()


# ---------------------------------------------------------------------------- positions
def _rows_cols(shape: list[int]) -> tuple[int, int]:
    numel = int(np.prod(shape)) if shape else 1
    rows = shape[0] if shape and shape[0] > 0 else 1
    return rows, numel // rows


def best_gap_bits(positions: np.ndarray, value_bits: int) -> int:
    """The k minimizing (entries incl. fillers) x (k + value bits)."""
    gaps = np.diff(positions, prepend=-1) - 1
    costs = [(int((gaps >> k).sum()) + len(gaps)) * (k + value_bits)
             for k in range(1, MAX_GAP_BITS + 1)]
    return 1 + int(np.argmin(costs))


def delta_entries(positions: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(gaps, entry positions) with filler entries every 2^k zeros of a longer gap."""
    gaps = np.diff(positions, prepend=-1) - 1
    fillers = gaps >> k
    per = fillers + 1
    out = np.full(int(per.sum()), (1 << k) - 1, dtype=np.int64)
    last = np.cumsum(per) - 1
    out[last] = gaps - (fillers << k)
    return out, np.cumsum(out + 1) - 1


def _stored_mask(t: torch.Tensor, fill: torch.Tensor | None) -> np.ndarray:
    return (t != (0 if fill is None else fill)).flatten().numpy()


def encode(kind: str, t: torch.Tensor, fill: torch.Tensor | None = None, *, pack: bool = True,
           gap_bits: int | None = None) -> tuple[dict, Streams]:
    """Code `t` with the position coder `kind`; `gap_bits` fixes delta's k (else the best)."""
    t = t.detach().contiguous().cpu()
    flat = t.flatten()
    if kind == "dense":
        info, values = encode_values(flat, pack)
        if not info:
            return {"enc": "dense"}, {"": t}
        return {"enc": "dense", "shape": list(t.shape), **info}, {"::values": values}
    if t.dtype.is_floating_point and fill is None:  # -0.0 (a masked negative weight) is a
        flat = torch.where(flat == 0, torch.zeros_like(flat), flat)  # zero: filler = +0.0
    positions = np.flatnonzero(_stored_mask(t, fill))
    info: dict = {"enc": kind, "shape": list(t.shape)}
    streams: Streams = {}
    if kind == "bitmask":
        mask = np.zeros(flat.numel(), dtype=bool)
        mask[positions] = True
        streams["::bits"] = _u8(np.packbits(mask))
    elif kind == "delta":
        k = gap_bits or best_gap_bits(positions, value_bits_per_entry(flat[positions], pack))
        gaps, positions = delta_entries(positions, k)
        info["k"] = k
        streams["::gaps"] = _u8(B.pack(gaps, k))
    elif kind == "csr":
        rows, cols = _rows_cols(list(t.shape))
        counts = np.bincount(positions // max(cols, 1), minlength=rows)
        info["rb"], info["cb"] = B.width(int(counts.max(initial=0))), B.width(max(cols - 1, 0))
        streams["::rows"] = _u8(B.pack(counts, info["rb"]))
        streams["::cols"] = _u8(B.pack(positions % max(cols, 1), info["cb"]))
    else:
        raise ValueError(f"unknown position coding {kind!r}")
    info["n"] = len(positions)
    vinfo, streams["::values"] = encode_values(flat[torch.from_numpy(positions)], pack)
    return {**info, **vinfo}, streams


def decode(info: dict, streams: Streams, dtype: torch.dtype,
           fill: torch.Tensor | None = None) -> torch.Tensor:
    """Inverse of `encode`; `dtype` is the original tensor's (packed values lose it)."""
    kind = info["enc"]
    if kind == "dense" and "" in streams:
        return streams[""]
    shape = [int(s) for s in info["shape"]]
    numel = int(np.prod(shape)) if shape else 1
    if kind == "dense":
        return decode_values(info, streams["::values"], numel, dtype).view(shape)
    n = int(info["n"])
    if kind == "bitmask":
        mask = np.unpackbits(streams["::bits"].numpy(), count=numel).astype(bool)
        positions = np.flatnonzero(mask)
    elif kind == "delta":
        gaps = B.unpack(streams["::gaps"].numpy(), int(info["k"]), n)
        positions = np.cumsum(gaps + 1) - 1
    elif kind == "csr":
        rows, cols = _rows_cols(shape)
        counts = B.unpack(streams["::rows"].numpy(), int(info["rb"]), rows)
        col = B.unpack(streams["::cols"].numpy(), int(info["cb"]), n)
        if int(counts.sum()) != n or (n and int(col.max()) >= cols):
            raise ValueError("corrupt CSR positions")
        positions = np.repeat(np.arange(rows), counts) * cols + col
    else:
        raise ValueError(f"unknown position coding {kind!r}")
    if len(positions) != n or (n and (positions[-1] >= numel or positions.min() < 0)):
        raise ValueError(f"corrupt {kind} positions")
    values = decode_values(info, streams["::values"], n, dtype)
    out = torch.zeros(shape, dtype=dtype)
    if fill is not None:
        out += fill.to(dtype)
    out = out.flatten()
    out[torch.from_numpy(positions)] = values
    return out.view(shape)


def candidates(t: torch.Tensor, fill: torch.Tensor | None, sparse: bool, entropy: bool
               ) -> Iterator[tuple[dict, Streams]]:
    """Every coding worth sizing. With an entropy coder (`entropy`), the unpacked forms too:
    whole-byte symbols code better than bit-packed ones straddling byte boundaries."""
    packs = (True, False) if entropy else (True,)
    for pack in packs:
        yield encode("dense", t, pack=pack)
    if not sparse or not t.numel():
        return
    for pack in packs:
        yield encode("bitmask", t, fill, pack=pack)
        yield encode("csr", t, fill, pack=pack)
        yield encode("delta", t, fill, pack=pack)
        if entropy:
            yield encode("delta", t, fill, pack=pack, gap_bits=8)
