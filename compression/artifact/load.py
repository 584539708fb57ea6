"""Reading an artifact back: its header (one-line ArtifactError for anything unreadable),
its byte split, and the model rebuilt from a trusted config (never code the file names) with
every stream loaded into it."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safetensors import safe_open

from compression.artifact.coding.codecs import CODECS
from compression.artifact.entries import _decode_entry, _dtype
from compression.artifact.streams import (
    FORMAT,
    FORMATS,
    _decode_stream,
    _open,
    _write,
)
from compression.artifact.transforms import TRANSFORMS
from compression.core.errors import ArtifactError, ConfigError, first_line
from compression.core.lazy import nn, torch
from compression.data import DataSpec
from compression.models.config import ModelConfig, model_names
from compression.quantization import QUANTIZERS


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
