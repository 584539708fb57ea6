"""How each state entry becomes streams and back: the model's flat state (tensors, quantized
tensors, tensor subclasses), each tensor in the smallest encoding (dense, bitmask, CSR, delta,
... with a quantized tensor's zero-point fill), and the byte counts of a model in memory."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from compression.artifact.coding import positions
from compression.artifact.config import ExportConfig
from compression.core.errors import ArtifactError
from compression.core.lazy import is_traceable_wrapper_subclass, nn, torch

MIN_SPARSE_NUMEL = 64  # below this a sparse coding's bookkeeping is not worth it
HEADER_COST = 24  # ~ header bytes one more stream costs, so near-ties go to fewer streams


# ---------------------------------------------------------------------------- flattening
def flat_state(model: nn.Module) -> dict[str, Any]:
    """state_dict with tuples (quantized packed params) expanded to `key#i` entries and tensor
    subclasses (torchao) to `key#<inner name>` entries."""
    flat: dict[str, Any] = {}
    for key, value in model.state_dict().items():
        if is_traceable_wrapper_subclass(value):
            names, _ = value.__tensor_flatten__()
            flat[key] = ("subclass", names)
            for name in names:
                flat[f"{key}#{name}"] = getattr(value, name)
        elif isinstance(value, tuple):
            flat[key] = ("tuple", len(value))
            for i, item in enumerate(value):
                flat[f"{key}#{i}"] = item
        else:
            flat[key] = value
    return flat


def state_bytes(model: nn.Module) -> int:
    """In-memory bytes of parameters and buffers, quantized weights at their integer width. A
    module whose state dict is not what it holds (SparseLinear: a dense `weight` in the state,
    CSR tensors in memory) says so with a `memory_bytes()` method, used instead of its entries."""
    own = {name: m.memory_bytes() for name, m in model.named_modules()
           if callable(getattr(m, "memory_bytes", None))}
    total = sum(own.values())
    for key, value in flat_state(model).items():
        if isinstance(value, torch.Tensor) and key.split("#")[0].rpartition(".")[0] not in own:
            total += value.numel() * value.element_size()
    return total


def state_dict_bytes(model: nn.Module) -> int:
    """Bytes of `torch.save(model.state_dict())`: the usual PyTorch checkpoint, the reference
    the talk's sanity check compares a model file with."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


# ---------------------------------------------------------------------------- encodings
Cost = Callable[[dict[str, "torch.Tensor"]], int]  # stored bytes of a set of streams


def _encode_plain(key: str, t: torch.Tensor, sparse: bool, cost: Cost,
                  fill: torch.Tensor | None = None, only: str = "auto",
                  entropy: bool = False) -> tuple[dict, dict[str, torch.Tensor]]:
    """The smallest of the position codings (coding.positions) for `t`, sized by `cost` (the
    bytes the streams take once entropy coded). `fill` (broadcastable to `t`): the value a
    pruned element holds, when it is not 0. `only`: one coding forced (tests, experiments)."""
    t = t.detach().contiguous().cpu()
    sparse = sparse and t.numel() >= MIN_SPARSE_NUMEL
    best: tuple[int, dict, dict[str, torch.Tensor]] | None = None
    for info, streams in positions.candidates(t, fill, sparse, entropy):
        if only != "auto" and info["enc"] not in (only, "dense"):
            continue
        named = {key + suffix: v for suffix, v in streams.items()}
        size = cost(named) + HEADER_COST * len(named)
        # a forced coding wins over dense whenever it applies
        forced = only != "auto" and info["enc"] == only
        if best is None or size < best[0] or (forced and best[1]["enc"] == "dense"):
            best = (size, info, named)
        if only != "auto" and forced:
            break
    assert best is not None
    info = best[1]
    if "vb" in info:  # packed values: the stream no longer carries the dtype
        info["dtype"] = str(t.dtype).removeprefix("torch.")
    return info, best[2]


def _decode_plain(key: str, info: dict, tensors: dict[str, torch.Tensor],
                  fill: torch.Tensor | None = None) -> torch.Tensor:
    streams = {name[len(key):]: t for name, t in tensors.items()
               if name == key or name.startswith(key + "::")}
    if info["enc"] != "dense" and "n" not in info:  # format 1: values unpacked, n implied
        info = {**info, "n": streams["::values"].numel()}
    dtype = _dtype(info["dtype"]) if "dtype" in info else streams.get(
        "::values", streams.get("")).dtype
    return positions.decode(info, streams, dtype, fill)


def _narrow(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """torch keeps per-channel scales as float64 and zero points as int64; observers compute
    them in float32 / small ints, so the narrower dtype holds them exactly (checked)."""
    narrow = t.to(dtype)
    return (narrow if torch.equal(narrow.to(t.dtype), t) else t).contiguous()


def _zero_point_fill(shape: list[int], info: dict, zero_points: torch.Tensor | None
                     ) -> torch.Tensor:
    """The stored integer of 0.0 in a quantized tensor, broadcastable to its shape."""
    if info["scheme"] == "per_tensor":
        return torch.tensor(info["zero_point"])
    assert zero_points is not None
    view = [1] * len(shape)
    view[info["axis"]] = shape[info["axis"]]
    return zero_points.view(view)


def _encode_entry(key: str, value: Any, sparse: bool, cost: Cost, cfg: ExportConfig
                  ) -> tuple[dict, dict[str, torch.Tensor]]:
    if isinstance(value, tuple) and value and value[0] == "tuple":
        return {"kind": "tuple", "len": value[1]}, {}
    if isinstance(value, tuple) and value and value[0] == "subclass":
        return {"kind": "subclass", "names": list(value[1])}, {}
    if value is None:
        return {"kind": "none"}, {}
    if isinstance(value, torch.dtype):
        return {"kind": "dtype", "dtype": str(value).removeprefix("torch.")}, {}
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"cannot export state entry {key!r} of type {type(value).__name__}")
    if not value.is_quantized:
        info, tensors = _encode_plain(key, value, sparse, cost, only=cfg.positions,
                                      entropy=cfg.codec != "none")
        return {"kind": "tensor", **info}, tensors
    q: dict[str, Any] = {"kind": "qtensor", "qdtype": str(value.dtype).removeprefix("torch.")}
    extra: dict[str, torch.Tensor] = {}
    if value.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        q.update(scheme="per_tensor", scale=value.q_scale(), zero_point=value.q_zero_point())
    else:
        q.update(scheme="per_channel", axis=value.q_per_channel_axis())
        extra[f"{key}::scales"] = _narrow(value.q_per_channel_scales(), torch.float32)
        extra[f"{key}::zero_points"] = _narrow(value.q_per_channel_zero_points(), torch.int16)
    fill = _zero_point_fill(list(value.shape), q, extra.get(f"{key}::zero_points"))
    has_fill = bool((fill != 0).any())
    info, tensors = _encode_plain(key, value.int_repr(), sparse, cost,
                                  fill if has_fill else None, cfg.positions,
                                  cfg.codec != "none")
    if has_fill and info["enc"] != "dense":
        info["fill"] = "zero_point"
    return {**q, **info}, {**tensors, **extra}


def _dtype(name: Any) -> torch.dtype:
    """A dtype named in the header; only ever a torch.dtype (the name is file content)."""
    dtype = getattr(torch, name, None) if isinstance(name, str) else None
    if not isinstance(dtype, torch.dtype):
        raise ArtifactError(f"unknown dtype {name!r} in the header")
    return dtype


def _decode_entry(key: str, info: dict, tensors: dict[str, torch.Tensor]) -> Any:
    kind = info["kind"]
    if kind == "none":
        return None
    if kind == "dtype":
        return _dtype(info["dtype"])
    if kind == "tensor":
        return _decode_plain(key, info, tensors)
    fill = None
    if info.get("fill") == "zero_point" and info["enc"] != "dense":
        fill = _zero_point_fill(info["shape"], info, tensors.get(f"{key}::zero_points"))
    ints = _decode_plain(key, info, tensors, fill)
    qdtype = _dtype(info["qdtype"])
    if info["scheme"] == "per_tensor":
        q = torch._make_per_tensor_quantized_tensor(ints, info["scale"], info["zero_point"])
    else:
        q = torch._make_per_channel_quantized_tensor(
            ints, tensors[f"{key}::scales"].double(), tensors[f"{key}::zero_points"].long(),
            info["axis"],
        )
    assert q.dtype == qdtype, f"{key}: decoded {q.dtype}, header says {qdtype}"
    return q
