"""Content hashes of the code a baseline depends on, for the baseline cache key.

A key of configs alone would hand back stale weights after an edit of the user's model class,
the training loop or the data code; hashing their source files makes such an edit a cache miss.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

import compression

PACKAGE_DIR = Path(compression.__file__).resolve().parent
TORCH_DIR = Path(torch.__file__).resolve().parent
# What trains and feeds a baseline: the loop and every data loader (built-in and user formats).
TRAINING_CODE = ("training/loop.py", "data")


@functools.lru_cache(maxsize=256)
def _file_hash(path: str, size: int, mtime_ns: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def files_hash(paths: Iterable[Path]) -> str:
    """One hash over the files' names and contents (order-independent)."""
    digest = hashlib.sha256()
    for path in sorted({p.resolve() for p in paths}):
        st = path.stat()
        digest.update(f"{path.name}:{_file_hash(str(path), st.st_size, st.st_mtime_ns)};"
                      .encode())
    return digest.hexdigest()[:20]


def training_code_hash() -> str:
    files: list[Path] = []
    for name in TRAINING_CODE:
        target = PACKAGE_DIR / name
        files.extend(sorted(target.rglob("*.py")) if target.is_dir() else [target])
    return files_hash(files)


def _source_file(obj: object) -> Path | None:
    try:
        name = inspect.getsourcefile(obj)  # type: ignore[arg-type]
    except TypeError:  # builtins and C extensions have no source file
        return None
    return Path(name) if name else None


def model_code_hash(factory: object, model: nn.Module | None = None) -> str:
    """The factory's source file plus that of every module class in `model` outside torch
    itself (the user's classes may live in another file than the factory)."""
    files = {_source_file(factory)}
    if model is not None:
        files |= {_source_file(type(m)) for m in model.modules()}
    own = [f for f in files if f is not None and f.is_file() and TORCH_DIR not in f.parents]
    return files_hash(own)
