"""The dense baseline: the user's checkpoint as it is, or trained once per (model, data,
training config, seed, code) and cached on disk.

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

from compression import checkpoint as ckpt
from compression import fingerprint
from compression.data import DataConfig, Splits
from compression.models import ModelConfig, build_model, factory_of
from compression.training import TrainConfig, evaluate, load_optimizer_machinery, train

log = logging.getLogger(__name__)

CACHE_VERSION = 2  # bump when baselines change in a way the key's content hashes cannot see


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
    source: str = "trained"  # trained | cache | checkpoint
    checkpoint_sha256: str | None = None

    def tags(self) -> dict[str, str]:
        """MLflow tags saying where the baseline came from."""
        tags = {"baseline_source": self.source, "baseline_path": str(self.path),
                "baseline_cache": "hit" if self.cache_hit else "miss"}
        if self.checkpoint_sha256:
            tags["checkpoint_sha256"] = self.checkpoint_sha256
        return tags


def cache_key(model: ModelConfig, data: DataConfig, train_cfg: TrainConfig, seed: int, *,
              data_digest: str = "", built: nn.Module | None = None) -> str:
    """Configs plus content hashes: the checkpoint file, the model's source (the factory's
    file and, given the `built` model, every non-torch module class's file), the training and
    data code, the data's own digest and the torch version. Editing any of them is a miss."""
    payload = {
        "version": CACHE_VERSION,
        "model": model.to_dict(),
        "data": asdict(data),
        "train": asdict(train_cfg),
        "seed": seed,
        "checkpoint": ckpt.sha256(model.checkpoint) if model.checkpoint else None,
        "model_code": fingerprint.model_code_hash(factory_of(model), built),
        "training_code": fingerprint.training_code_hash(),
        "data_digest": data_digest,
        "torch": torch.__version__,
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


def get_baseline(
    model_cfg: ModelConfig,
    data_cfg: DataConfig,
    train_cfg: TrainConfig,
    seed: int,
    data: Splits,
    cache_dir: Path,
) -> Baseline:
    """Return the dense baseline: the checkpoint as it is, else trained, cached when possible."""
    torch.manual_seed(seed)
    model = build_model(model_cfg, data.spec)
    if model_cfg.checkpoint:
        return from_checkpoint(model, model_cfg.checkpoint, data)
    key = cache_key(model_cfg, data_cfg, train_cfg, seed, data_digest=data.digest, built=model)
    path = cache_dir / f"{model_cfg.name}-{data_cfg.name}-{key}.safetensors"
    meta = _try_load(path, model)
    if meta is None:
        with _training_lock(path):
            meta = _try_load(path, model)  # another process may have trained it meanwhile
            if meta is None:
                return _train_and_cache(model, key, path, model_cfg, data_cfg, train_cfg,
                                        seed, data)
    log.info("baseline cache hit: %s (no training)", path)
    model.eval()
    return Baseline(model, path, True, 0.0, *_accuracies(model, data, meta), source="cache")


def from_checkpoint(model: nn.Module, path: str, data: Splits) -> Baseline:
    """The user's trained weights, evaluated as they are on val and test: never retrained."""
    ckpt.load_into(model, path)
    model.eval()
    sha = ckpt.sha256(path)
    acc, val_acc = _accuracies(model, data, {})
    log.info("baseline from checkpoint %s (sha256 %s…): test %.4f, no training", path, sha[:12],
             acc)
    return Baseline(model, Path(path), False, 0.0, acc, val_acc, source="checkpoint",
                    checkpoint_sha256=sha)


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
    train(model, data, train_cfg, seed=seed, desc="baseline")
    seconds = time.perf_counter() - t0
    model.eval()
    acc, val_acc = _accuracies(model, data, {})
    # repr keeps every digit: the float read back is the one evaluated
    _save_atomic(path, model, {"key": key, "train_seconds": f"{seconds:.3f}",
                               "accuracy": repr(acc), "val_accuracy": repr(val_acc)})
    log.info("baseline trained in %.1fs (test accuracy %.4f), cached at %s", seconds, acc, path)
    return Baseline(model, path, False, seconds, acc, val_acc)
