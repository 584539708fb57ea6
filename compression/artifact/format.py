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

import io
import json
import os
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from safetensors import safe_open

from compression.artifact.coding import positions
from compression.artifact.coding.codecs import CODECS, zstd_available
from compression.artifact.transforms import TRANSFORMS
from compression.core import validation as v
from compression.core.errors import ArtifactError, ConfigError, first_line
from compression.core.lazy import is_traceable_wrapper_subclass, nn, np, safetensors_torch, torch
from compression.data import DataSpec
from compression.models.config import ModelConfig, model_names
from compression.quantization import QUANTIZERS, QuantizationConfig

FORMAT = "compression-artifact/2"
FORMATS = ("compression-artifact/1", FORMAT)  # format 1 (one tensor per stream) still loads
META_KEY = "compression"
DATA_KEY = "data"
MIN_SPARSE_NUMEL = 64  # below this a sparse coding's bookkeeping is not worth it
MIN_CODED = 16  # shorter streams are never entropy coded
HEADER_COST = 24  # ~ header bytes one more stream costs, so near-ties go to fewer streams
MAX_HEADER = 64 << 20  # an inflated header larger than this is refused (a deflate bomb)


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


# ---------------------------------------------------------------------------- config
@dataclass
class ExportConfig:
    """How the artifact's streams are stored (`export.*`)."""

    codec: str = "none"  # entropy codec on every value / position stream: none|huffman|zstd|lzma
    positions: str = "auto"  # auto: the smallest coding per tensor; or force one (experiments)

    def __post_init__(self) -> None:
        v.one_of("export.codec", self.codec, sorted(CODECS))
        v.one_of("export.positions", self.positions, ["auto", *positions.KINDS])
        if self.codec == "zstd" and not zstd_available():
            raise ConfigError("export.codec=zstd needs the zstandard package "
                              "(pip install -r requirements.txt)")


# ---------------------------------------------------------------------------- streams
def _raw_bytes(t: torch.Tensor) -> bytes:
    return t.detach().contiguous().cpu().flatten().view(torch.uint8).numpy().tobytes()


def _code(t: torch.Tensor, codec: str) -> tuple[bytes, bool]:
    """A stream's stored bytes and whether they are entropy coded (only when it pays)."""
    raw = _raw_bytes(t)
    if codec != "none" and len(raw) >= MIN_CODED:
        coded = CODECS[codec].encode(raw)
        if len(coded) < len(raw):
            return coded, True
    return raw, False


def _decode_stream(data: bytes, dtype: torch.dtype, shape: list[int], coded: bool,
                   codec: str) -> torch.Tensor:
    numel = int(np.prod(shape)) if shape else 1
    size = numel * torch.empty((), dtype=dtype).element_size()
    raw = CODECS[codec if coded else "none"].decode(data, size)
    flat = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else torch.empty(
        0, dtype=torch.uint8)
    return flat.view(dtype).reshape(shape)


# A preset deflate dictionary of what every header says (part of format 2: changing it breaks
# reading older files). A small model's JSON header deflates to ~60% of its size alone; with
# this, to ~35%: the header of a 40x-compressed mlp stays under 2% of its file.
_HEADER_DICT = (
    b'{"format":"compression-artifact/2","model":{"name":"custom","_target_":"","width":1.0},'
    b'"spec":{"name":"digits","in_channels":1,"image_size":28,"num_classes":10},'
    b'"quantization":{"mode":"none","backend":"native","engine":"x86","bits":4,'
    b'"granularity":"group","group_size":32,"qat":false,"epochs":3,"lr":0.0001,'
    b'"layers":["linear","conv"],"iterations":30,"init":"linear"},"transforms":[],'
    b'"codec":"none","entries":{"conv1.weight":{"kind":"qtensor","qdtype":"qint8",'
    b'"scheme":"per_channel","axis":0,"fill":"zero_point","dtype":"int8",'
    b'"s":[["::scales","float32",[16],64,0],["::zero_points","int16",[16],32,0]]},'
    b'"fc3.weight":{"kind":"tensor","enc":"csr","shape":[10,100],"n":635,"rb":7,"cb":7,'
    b'"s":[["::rows","uint8",[7],7,0],["::cols","uint8",[7],7,1],'
    b'["::values","float32",[635],2328,1]]},"fc2.bias":{"kind":"tensor","enc":"dense",'
    b'"s":[["","float32",[100],400,0]]},"fc1.codebook":{"kind":"tensor","enc":"dense",'
    b'"s":[["","float16",[16],32,0]]},"fc1.weight":{"kind":"tensor","enc":"bitmask",'
    b'"shape":[300,784],"n":1165,"s":[["::bits","uint8",[125],125,0],'
    b'["::values","uint8",[1165],3589,1]]},"fc1.codes":{"kind":"tensor","enc":"delta",'
    b'"shape":[300,784],"k":5,"n":11522,"vb":4,"vo":1,"dtype":"uint8",'
    b'"s":[["::gaps","uint8",[1457],1457,1],["::values","uint8",[1165],3589,1]]}}}'
)


def _deflate(data: bytes) -> bytes:
    # raw deflate: no zlib header or checksum (safetensors' framing already bounds the data)
    z = zlib.compressobj(9, zlib.DEFLATED, -15, zdict=_HEADER_DICT)
    return z.compress(data) + z.flush()


def _inflate(data: bytes) -> bytes:
    out = zlib.decompressobj(-15, zdict=_HEADER_DICT).decompress(data, MAX_HEADER)
    if len(out) >= MAX_HEADER:
        raise ValueError(f"the header inflates to more than {MAX_HEADER} bytes")
    return out


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
    export: ExportConfig | None = None,
) -> dict[str, int]:
    """Write `model` to `path`; returns the stored bytes of each state entry (tensor payload,
    before the file header), from which per-layer artifact bytes are summed.

    Layout: a safetensors file with one uint8 tensor `data` = the deflated JSON header, then
    every stream's bytes; the safetensors metadata names the format and the header's length.
    Each entry lists its streams as [suffix, dtype, shape, stored bytes, entropy coded]."""
    cfg = export or ExportConfig()

    def cost(streams: dict[str, torch.Tensor]) -> int:
        return sum(len(_code(t, cfg.codec)[0]) for t in streams.values())

    entries: dict[str, dict] = {}
    chunks: list[bytes] = []
    stored_bytes: dict[str, int] = {}
    for key, value in flat_state(model).items():
        info, streams = _encode_entry(key, value, sparse, cost, cfg)
        table = []
        for name, t in streams.items():
            data, coded = _code(t, cfg.codec)
            chunks.append(data)
            table.append([name[len(key):], str(t.dtype).removeprefix("torch."), list(t.shape),
                          len(data), int(coded)])
        if table:
            info["s"] = table
        entries[key] = info
        stored_bytes[key] = sum(row[3] for row in table)
    meta = {
        "format": FORMAT,
        "model": model_cfg.to_dict(),
        # `sequence` only when set: image and table artifacts keep the header they always had
        "spec": {k: v for k, v in asdict(spec).items() if k != "sequence" or v},
        "quantization": asdict(quant_cfg),
        "transforms": transforms or [],
        "codec": cfg.codec,
        "entries": entries,
    }
    _write(path, meta, b"".join(chunks))
    return stored_bytes


def _write(path: Path, meta: dict[str, Any], payload: bytes) -> None:
    header = _deflate(json.dumps(meta, separators=(",", ":")).encode())
    blob = torch.frombuffer(bytearray(header + payload), dtype=torch.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    box = json.dumps({"format": FORMAT, "header": len(header)}, separators=(",", ":"))
    safetensors_torch.save_file({DATA_KEY: blob}, str(tmp), metadata={META_KEY: box})
    os.replace(tmp, path)


def _open(path: Path) -> tuple[dict[str, Any], bytes]:
    """(header, payload bytes) of a format-2 file, or (format-1 header, b"")."""
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            blob = f.get_tensor(DATA_KEY) if DATA_KEY in f.keys() else None  # noqa: SIM118
    except Exception as e:  # safetensors raises its own errors for a corrupt file
        raise ArtifactError(f"{path} is not a readable model file: {first_line(e)}") from None
    if META_KEY not in header:
        raise ArtifactError(f"{path} is not a compression artifact (no '{META_KEY}' header)")
    try:
        meta = json.loads(header[META_KEY])
        if isinstance(meta, dict) and meta.get("format") == FORMAT:
            n = meta.get("header")
            if blob is None or not isinstance(n, int) or not 0 < n <= blob.numel():
                raise ValueError("the header length does not fit the file")
            raw = blob.numpy().tobytes()
            return json.loads(_inflate(raw[:n])), raw[n:]
    except (ValueError, zlib.error) as e:
        raise ArtifactError(f"{path}: malformed '{META_KEY}' header: {first_line(e)}") from None
    return meta, b""


def read_meta(path: Path) -> dict[str, Any]:
    """The artifact's header. Anything that is not a readable artifact of this format (a
    truncated or foreign file, a malformed header) is an ArtifactError, one line."""
    meta, _ = _open(path)
    if not isinstance(meta, dict) or meta.get("format") not in FORMATS:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ArtifactError(f"{path}: unsupported artifact format {got!r}")
    return meta


def rewrite_meta(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite a format-2 file's header through `edit(meta)`, the streams kept as they are
    (for tests that tamper with headers, and for tools that fix one up)."""
    meta, payload = _open(path)
    edit(meta)
    _write(path, meta, payload)


def itemize(path: Path) -> dict[str, int]:
    """The file's bytes split into `payload_bytes` (tensor data: values, positions, codebooks,
    scales, as stored) and `header_bytes` (everything else: safetensors framing, JSON header)."""
    meta, payload = _open(path)
    if meta.get("format") == FORMAT:
        data = len(payload)
    else:  # format 1: every safetensors tensor is payload
        with safe_open(str(path), framework="pt") as f:
            data = sum(f.get_tensor(k).numel() * f.get_tensor(k).element_size()
                       for k in f.keys())  # noqa: SIM118
    size = path.stat().st_size
    return {"payload_bytes": data, "header_bytes": size - data}


def _streams(path: Path, meta: dict[str, Any], payload: bytes) -> dict[str, torch.Tensor]:
    """Every stream of a format-2 payload, decoded, by name (`key` + suffix)."""
    codec = meta.get("codec", "none")
    if codec not in CODECS:  # a closed set, like the models'
        raise ArtifactError(f"{path}: unknown codec {codec!r} in the header")
    tensors: dict[str, torch.Tensor] = {}
    pos = 0
    for key, info in meta["entries"].items():
        for suffix, dtype, shape, nbytes, coded in info.get("s", []):
            if not isinstance(nbytes, int) or nbytes < 0 or pos + nbytes > len(payload):
                raise ArtifactError(f"{path}: stream {key}{suffix} runs past the end of the file")
            tensors[key + suffix] = _decode_stream(payload[pos:pos + nbytes], _dtype(dtype),
                                                   [int(s) for s in shape], bool(coded), codec)
            pos += nbytes
    if pos != len(payload):
        raise ArtifactError(f"{path}: {len(payload) - pos} bytes of the payload are not listed")
    return tensors


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
        known = model_names()
        if name not in known:
            raise ArtifactError(f"{path}: the header names model {name!r}, which is not a "
                                f"built-in model ({', '.join(known)})")
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
    if meta["format"] == FORMAT:
        tensors = _streams(path, meta, _open(path)[1])
    else:  # format 1: one safetensors tensor per stream
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (no iter)
    spec = DataSpec(**meta["spec"])
    from compression.models.build import build_model

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
