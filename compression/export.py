"""The deployable artifact: a safetensors file whose header records how to rebuild the model.

Why safetensors: it loads without pickle, and its byte count is honest - header plus raw tensor
bytes. Tensors are stored in the smallest of these encodings, chosen per tensor:

- `dense`: the tensor as is (fp32, fp16, int8, ...);
- `bitmask`: a packed bitmap of nonzero positions (1 bit per element) plus the nonzero values,
  used when it is smaller than dense (any sparsity above 1/(8*itemsize)).

Quantized tensors are stored as their integer representation (1 byte per int8 element) with
their scales (float32) and zero points (int16), narrowed from torch's float64 / int64 when that
is exact, so an int8 model costs int8 bytes and a pruned int8 model gets both savings at once.
An affine quantized tensor holds a pruned 0.0 as its zero point, so its bitmask marks the
positions that differ from the zero point instead (the entry then says `"fill": "zero_point"`;
per-channel zero points broadcast along the channel axis).

Packed low-bit weights (compression.quantization.lowbit) are plain uint8 buffers (b-bit two's
complement codes, little-endian bitstream, see quantization/packing.py) plus fp16 scales; a zero
weight packs to zero bits, so the same bitmask encoding drops pruned bytes.

Tensor-subclass weights (torchao's `Int8Tensor`, ...) are stored as their inner tensors
(`key#qdata`, `key#scale`, ...) under an entry of kind `subclass`; the loader takes the rest of
the subclass (its non-tensor context) from the skeleton the quantization config rebuilds.

The header's `compression` entry holds the model config, input spec, quantization config and
each entry's encoding; `load_artifact` rebuilds the module structure from that and loads the
tensors into it, so what is evaluated is what was written.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

from compression.data import DataSpec
from compression.errors import ArtifactError, ConfigError, first_line
from compression.models import MODELS, ModelConfig, build_model
from compression.quantization import QUANTIZERS, QuantizationConfig
from compression.transforms import TRANSFORMS

FORMAT = "compression-artifact/1"
META_KEY = "compression"
MIN_SPARSE_NUMEL = 64  # below this the bitmask's bookkeeping is not worth it



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


# ---------------------------------------------------------------------------- encodings
def _encode_plain(key: str, t: torch.Tensor, sparse: bool, fill: torch.Tensor | None = None
                  ) -> tuple[dict, dict[str, torch.Tensor]]:
    """`fill` (broadcastable to `t`): the value a pruned element holds, when it is not 0."""
    t = t.detach().contiguous().cpu()
    n, item = t.numel(), t.element_size()
    nz = (t != (0 if fill is None else fill)).flatten()
    nnz = int(nz.sum())
    sparse_bytes = -(-n // 8) + nnz * item
    if sparse and n >= MIN_SPARSE_NUMEL and sparse_bytes < n * item:
        bits = torch.from_numpy(np.packbits(nz.numpy()))
        return (
            {"enc": "bitmask", "shape": list(t.shape)},
            {f"{key}::bits": bits, f"{key}::values": t.flatten()[nz].clone()},
        )
    return {"enc": "dense"}, {key: t}


def _decode_plain(key: str, info: dict, tensors: dict[str, torch.Tensor],
                  fill: torch.Tensor | None = None) -> torch.Tensor:
    if info["enc"] == "dense":
        return tensors[key]
    shape = info["shape"]
    n = int(np.prod(shape)) if shape else 1
    nz = torch.from_numpy(np.unpackbits(tensors[f"{key}::bits"].numpy(), count=n).astype(bool))
    values = tensors[f"{key}::values"]
    out = torch.zeros(shape, dtype=values.dtype)
    if fill is not None:
        out += fill.to(values.dtype)
    out = out.flatten()
    out[nz] = values
    return out.view(shape)


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


def _encode_entry(key: str, value: Any, sparse: bool) -> tuple[dict, dict[str, torch.Tensor]]:
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
        info, tensors = _encode_plain(key, value, sparse)
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
    info, tensors = _encode_plain(key, value.int_repr(), sparse, fill if has_fill else None)
    if has_fill and info["enc"] == "bitmask":
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
    if info.get("fill") == "zero_point":
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


# ---------------------------------------------------------------------------- save / load
def save_artifact(
    model: nn.Module,
    path: Path,
    *,
    model_cfg: ModelConfig,
    spec: DataSpec,
    quant_cfg: QuantizationConfig,
    transforms: list[dict[str, Any]] | None = None,
    sparse: bool = True,
) -> dict[str, int]:
    """Write `model` to `path`; returns the stored bytes of each state entry (tensor payload,
    before the file header), from which per-layer artifact bytes are summed."""
    entries: dict[str, dict] = {}
    tensors: dict[str, torch.Tensor] = {}
    stored_bytes: dict[str, int] = {}
    for key, value in flat_state(model).items():
        entries[key], stored = _encode_entry(key, value, sparse)
        tensors.update(stored)
        stored_bytes[key] = sum(t.numel() * t.element_size() for t in stored.values())
    meta = {
        "format": FORMAT,
        "model": model_cfg.to_dict(),
        "spec": asdict(spec),
        "quantization": asdict(quant_cfg),
        "transforms": transforms or [],
        "entries": entries,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(meta)})
    os.replace(tmp, path)
    return stored_bytes


def read_meta(path: Path) -> dict[str, Any]:
    """The artifact's header. Anything that is not a readable artifact of this format (a
    truncated or foreign file, a malformed header) is an ArtifactError, one line."""
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except Exception as e:  # safetensors raises its own errors for a corrupt file
        raise ArtifactError(f"{path} is not a readable model file: {first_line(e)}") from None
    if META_KEY not in header:
        raise ArtifactError(f"{path} is not a compression artifact (no '{META_KEY}' header)")
    try:
        meta = json.loads(header[META_KEY])
    except ValueError as e:
        raise ArtifactError(f"{path}: malformed '{META_KEY}' header: {first_line(e)}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ArtifactError(f"{path}: unsupported artifact format {got!r}")
    return meta


def trusted_model_config(recorded: Any, given: ModelConfig | None, path: Path) -> ModelConfig:
    """The model config an artifact is rebuilt from, without ever calling a callable that only
    the file names. A built-in model is looked up in the registry (a closed set of classes). A
    user factory (`_target_` in the header) is called only when the caller's own config names
    the same factory (`given`): the file supplies data (its keyword arguments), never code."""
    if not isinstance(recorded, dict):
        raise ArtifactError(f"{path}: malformed header: 'model' is not a mapping")
    target = recorded.get("_target_")
    if target is None:
        name = recorded.get("name")
        if name not in MODELS:
            raise ArtifactError(f"{path}: the header names model {name!r}, which is not a "
                                f"built-in model ({', '.join(sorted(MODELS))})")
        if given is not None and (given.target is not None or given.name != name):
            raise ArtifactError(f"{path} holds the built-in model {name!r}, not the "
                                f"{given.target or given.name!r} the caller asked for")
        try:
            return ModelConfig.from_dict(recorded)
        except ConfigError as e:
            raise ArtifactError(f"{path}: malformed header: {e}") from None
    if given is None or given.target != target:
        named = f"{given.target or given.name!r}" if given else "no factory"
        raise ArtifactError(
            f"{path} names the model factory {target!r} but the caller named {named}; a loader "
            f"never calls code named by a file: pass model._target_={target} (analyze.py) or "
            "model=<your factory> (compression.load) if you trust it")
    try:
        cfg = ModelConfig.from_dict(recorded)
    except ConfigError as e:
        raise ArtifactError(f"{path}: malformed header: {e}") from None
    if given.kwargs and given.kwargs != cfg.kwargs:
        raise ArtifactError(f"{path} was built by {target} with {cfg.kwargs}, not with the "
                            f"caller's {given.kwargs}")
    return cfg


def load_artifact(path: Path, model: ModelConfig | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model recorded in `path` and load its weights; returns (model, header).

    `model`: the caller's own model config. Needed (and checked against the header) when the
    artifact holds a user `_target_` model; built-in models load without it. Everything that
    cannot be loaded is an ArtifactError (one line)."""
    meta = read_meta(path)
    model_cfg = trusted_model_config(meta.get("model"), model, path)
    try:
        return _rebuild(path, meta, model_cfg), meta
    except ArtifactError:
        raise
    except Exception as e:  # a corrupt or tampered file: one line, never a traceback
        raise ArtifactError(f"{path} cannot be loaded: {type(e).__name__}: "
                            f"{first_line(e)}") from None


def _rebuild(path: Path, meta: dict[str, Any], model_cfg: ModelConfig) -> nn.Module:
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iter)
    spec = DataSpec(**meta["spec"])
    model = build_model(model_cfg, spec)
    import compression.pruning  # noqa: F401  (registers the pruning methods' transforms)

    for t in meta["transforms"]:
        if t.get("kind") not in TRANSFORMS:  # a closed registry, like the models'
            raise ArtifactError(f"{path}: unknown transform {t.get('kind')!r} in the header")
        model = TRANSFORMS[t["kind"]](model, t)
    qcfg = QUANTIZERS.build_config(meta["quantization"])
    example = spec.example_input(1)  # graph-mode skeletons trace with it
    model = QUANTIZERS.get(qcfg.mode).handler.skeleton(model, qcfg, example)
    # Quantized modules pick their loading path from the state_dict's version metadata, so the
    # rebuilt dict carries the skeleton's `_metadata` (an OrderedDict attribute, as torch does).
    state: OrderedDict[str, Any] = OrderedDict()
    state._metadata = getattr(model.state_dict(), "_metadata", None)  # type: ignore[attr-defined]
    entries = meta["entries"]
    skeleton_state = model.state_dict()
    for key, info in entries.items():
        if "#" in key:
            continue  # tuple / subclass members are gathered by their parent entry below
        if info["kind"] == "tuple":
            state[key] = tuple(
                _decode_entry(f"{key}#{i}", entries[f"{key}#{i}"], tensors)
                for i in range(info["len"])
            )
        elif info["kind"] == "subclass":
            like = skeleton_state[key]
            inner = {n: _decode_entry(f"{key}#{n}", entries[f"{key}#{n}"], tensors)
                     for n in info["names"]}
            _, ctx = like.__tensor_flatten__()
            state[key] = type(like).__tensor_unflatten__(inner, ctx, like.size(), like.stride())
        else:
            state[key] = _decode_entry(key, info, tensors)
    model.load_state_dict(state, strict=True)
    model.eval()
    return model
