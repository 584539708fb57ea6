"""The user's pretrained weights (`model.checkpoint=PATH`): read safely, checked key by key.

Formats: a safetensors file, or a PyTorch `.pt`/`.pth` state_dict read with
`torch.load(weights_only=True)` (nothing executable is ever unpickled), bare or wrapped in the
common `{"state_dict": ...}` / `{"model": ...}` dict. A whole pickled model is refused: loading
it would run code named by the file.
"""

from __future__ import annotations

import functools
import hashlib
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from compression.core.errors import ConfigError, first_line

WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net")  # common training-loop dicts
SHOW = 3  # keys named in a mismatch message


class CheckpointError(ConfigError):
    """A checkpoint that cannot be loaded into the configured model (one line, exit 2)."""


@functools.lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256(path: str | Path) -> str:
    """The file's content hash (memoized per size and mtime: a sweep hashes it once)."""
    st = Path(path).stat()
    return _sha256(str(path), st.st_size, st.st_mtime_ns)


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, nn.Module):  # only reachable if a caller loads without weights_only
        raise CheckpointError(_whole_model_message(path))
    if isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(
                    isinstance(t, torch.Tensor) for t in inner.values()):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"model.checkpoint={path}: holds {type(obj).__name__}, not a "
                              "state_dict (a dict of tensors, optionally under a 'state_dict' "
                              "or 'model' key)")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"model.checkpoint={path}: a dict without tensors (keys: "
                              f"{', '.join(map(str, list(obj)[:SHOW]))}); expected a state_dict")
    # nn.DataParallel / DistributedDataParallel save every key under `module.`
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def _whole_model_message(path: Path) -> str:
    return (f"model.checkpoint={path} is a pickled whole model, which cannot be loaded safely; "
            "save its weights instead: torch.save(model.state_dict(), 'model.pt')")


def read(path: str | Path) -> dict[str, torch.Tensor]:
    """The state_dict stored at `path`; one-line CheckpointError for anything else."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model.checkpoint={path} does not exist")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"model.checkpoint={path} is not a readable safetensors file: "
                                  f"{first_line(e)}") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # weights_only refuses any global it does not know: a whole nn.Module names its class
        if "GLOBAL" in str(e) or "Unsupported global" in str(e):
            raise CheckpointError(_whole_model_message(path)) from None
        raise CheckpointError(f"model.checkpoint={path} is not a PyTorch state_dict file: "
                              f"{_unpickler_reason(e)}") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"model.checkpoint={path} is not a readable PyTorch or "
                              f"safetensors file: {first_line(e)}") from None
    return _unwrap(obj, path)


def _names(keys: list[str]) -> str:
    more = f", ... ({len(keys)} in all)" if len(keys) > SHOW else f" ({len(keys)})"
    return ", ".join(keys[:SHOW]) + more


def load_into(model: nn.Module, path: str | Path) -> None:
    """Load the checkpoint at `path` into `model` strictly: every key present, none extra, every
    shape equal; a mismatch is one line naming the first few keys and the count."""
    state = read(path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    misshaped = [f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                 for k in own if k in state and state[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"missing keys {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_names(unexpected)}")
    if misshaped:
        problems.append(f"wrong shapes {_names(misshaped)}")
    if problems:
        raise CheckpointError(f"model.checkpoint={path} does not fit the model: "
                              + "; ".join(problems))
    with torch.no_grad():
        model.load_state_dict({k: state[k].to(own[k].dtype) for k in own}, strict=True)


def _unpickler_reason(e: Exception) -> str:
    """What torch's safe unpickler found, without its first line: that line advises re-running
    with `weights_only=False`, which would execute code named by the file."""
    text = str(e)
    if "WeightsUnpickler error:" in text:
        reason = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation")[0]
        reason = " ".join(reason.split())
        if reason:
            return f"the safe loader (weights_only=True) read: {reason}"
    return first_line(e) if "weights_only" not in first_line(e) else type(e).__name__
