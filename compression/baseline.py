"""The dense baseline: trained once per (model, data, training config, seed), cached on disk.

Every trial of a sweep starts from the same cached weights instead of retraining. Entries are
safetensors files (no pickle, nothing executable on load) written atomically, so parallel workers
never read a half-written file; an unreadable entry is retrained, not crashed on.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from compression.data import DataConfig, DataSpec, Splits
from compression.models import ModelConfig, build_model
from compression.training import (
    DivergedError,
    TrainConfig,
    evaluate,
    load_optimizer_machinery,
    train,
)

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when model definitions or training change in a way keys cannot see


@dataclass
class Baseline:
    model: nn.Module
    path: Path
    cache_hit: bool
    train_seconds: float  # 0 on a cache hit
    # Test and val accuracy, evaluated once when the entry is written and kept in its metadata:
    # every trial reports them, and re-evaluating per trial costs seconds on fashion_mnist.
    accuracy: float
    val_accuracy: float


def cache_key(model: ModelConfig, data: DataConfig, train_cfg: TrainConfig, seed: int) -> str:
    data_part = {k: val for k, val in asdict(data).items()}
    payload = {
        "version": CACHE_VERSION,
        "model": model.to_dict(),
        "data": data_part,
        "train": asdict(train_cfg),
        "seed": seed,
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def _try_load(path: Path, model: nn.Module) -> dict[str, str] | None:
    """The entry's metadata once its weights are loaded into `model`; None when there is none."""
    if not path.exists():
        return None
    try:
        with safe_open(str(path), "pt") as f:  # one read: tensors and metadata
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
            meta = f.metadata() or {}
        model.load_state_dict(state, strict=True)
        return meta
    except Exception as e:  # truncated file, wrong shapes, foreign file: retrain instead
        log.warning("baseline cache entry %s is unreadable (%s); retraining", path.name, e)
        path.unlink(missing_ok=True)
        return None


def _accuracies(model: nn.Module, data: Splits, meta: dict[str, str]) -> tuple[float, float]:
    """From the entry's metadata; evaluated here for entries written before it held them."""
    if "accuracy" in meta and "val_accuracy" in meta:
        return float(meta["accuracy"]), float(meta["val_accuracy"])
    return (evaluate(model, data.test_x, data.test_y),
            evaluate(model, data.val_x, data.val_y))


def _save_atomic(path: Path, model: nn.Module, meta: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    state = {k: t.detach().contiguous() for k, t in model.state_dict().items()}
    save_file(state, str(tmp), metadata=meta)
    os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the whole new one


def cache_path(model_cfg: ModelConfig, data_cfg: DataConfig, train_cfg: TrainConfig, seed: int,
               cache_dir: Path) -> Path:
    """Where get_baseline keeps (or would keep) this baseline."""
    key = cache_key(model_cfg, data_cfg, train_cfg, seed)
    return cache_dir / f"{model_cfg.name}-{data_cfg.name}-{key}.safetensors"


def cached_baseline(model_cfg: ModelConfig, data_cfg: DataConfig, train_cfg: TrainConfig,
                    seed: int, spec: DataSpec, cache_dir: Path) -> tuple[nn.Module, Path] | None:
    """The trained baseline get_baseline cached for this config, read only: (model, its file),
    or None when there is none (nothing is trained, written or deleted here)."""
    path = cache_path(model_cfg, data_cfg, train_cfg, seed, cache_dir)
    if not path.exists():
        return None
    model = build_model(model_cfg, spec)
    try:
        with safe_open(str(path), "pt") as f:
            model.load_state_dict({k: f.get_tensor(k) for k in f.keys()}, strict=True)  # noqa: SIM118
    except Exception as e:  # unreadable: get_baseline will retrain it; here, say so
        log.warning("baseline cache entry %s is unreadable (%s)", path.name, e)
        return None
    return model.eval(), path


def get_baseline(
    model_cfg: ModelConfig,
    data_cfg: DataConfig,
    train_cfg: TrainConfig,
    seed: int,
    data: Splits,
    cache_dir: Path,
) -> Baseline:
    """Return the trained dense baseline, from the cache when possible."""
    key = cache_key(model_cfg, data_cfg, train_cfg, seed)
    path = cache_path(model_cfg, data_cfg, train_cfg, seed, cache_dir)
    torch.manual_seed(seed)
    model = build_model(model_cfg, data.spec)
    meta = _try_load(path, model)
    if meta is None:
        with _training_lock(path):
            meta = _try_load(path, model)  # another process may have trained it meanwhile
            if meta is None:
                return _train_and_cache(model, key, path, model_cfg, data_cfg, train_cfg,
                                        seed, data)
    log.info("baseline cache hit: %s (no training)", path)
    model.eval()
    return Baseline(model, path, True, 0.0, *_accuracies(model, data, meta))


@contextlib.contextmanager
def _training_lock(path: Path) -> Iterator[None]:
    """One process at a time trains a given entry: parallel workers of a sweep that start on a
    cold cache would otherwise all train the same baseline, each on a share of the cores. The
    others wait, then load what the first wrote. An flock dies with its holder, so a killed
    worker never leaves the entry locked. (Where fcntl is missing, nothing is locked.)"""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("baseline %s is being trained by another process; waiting", path.name)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _train_and_cache(model: nn.Module, key: str, path: Path, model_cfg: ModelConfig,
                     data_cfg: DataConfig, train_cfg: TrainConfig, seed: int, data: Splits
                     ) -> Baseline:
    log.info("baseline cache miss: training %s on %s for %d epochs", model_cfg.name,
             data_cfg.name, train_cfg.epochs)
    load_optimizer_machinery()
    t0 = time.perf_counter()
    train(model, data, train_cfg, seed=seed, desc="baseline")  # a NaN loss raises DivergedError
    seconds = time.perf_counter() - t0
    model.eval()
    if not all(bool(torch.isfinite(t).all()) for t in model.state_dict().values()):
        raise DivergedError(f"baseline: training left non-finite weights (optimizer "
                            f"{train_cfg.optimizer}, lr {train_cfg.lr:g}); not cached; lower "
                            "train.lr")
    acc, val_acc = _accuracies(model, data, {})
    # repr keeps every digit: the float read back is the one evaluated
    _save_atomic(path, model, {"key": key, "train_seconds": f"{seconds:.3f}",
                               "accuracy": repr(acc), "val_accuracy": repr(val_acc)})
    log.info("baseline trained in %.1fs (test accuracy %.4f), cached at %s", seconds, acc, path)
    return Baseline(model, path, False, seconds, acc, val_acc)
