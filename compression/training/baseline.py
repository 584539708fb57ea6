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

from compression.data import DataConfig, Splits
from compression.models import checkpoint as ckpt
from compression.models import fingerprint
from compression.models.build import ModelConfig, build_model, factory_of
from compression.training.loop import (
    DivergedError,
    TrainConfig,
    evaluate,
    load_optimizer_machinery,
    train,
)
from compression.training.quality import MetricConfig

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


def _meta_keys(metric: MetricConfig) -> tuple[str, str] | None:
    """Where an entry keeps a built-in metric's test and val values; a user metric's are
    never read back (its code may have changed since)."""
    if metric.target is not None:
        return None
    name = "accuracy" if metric.is_default else metric.name
    return name, f"val_{name}"


def _accuracies(model: nn.Module, data: Splits, meta: dict[str, str],
                metric: MetricConfig | None = None) -> tuple[float, float]:
    """From the entry's metadata; evaluated here for entries written before it held them (or
    for another metric than the one they hold)."""
    metric = metric or MetricConfig()
    keys = _meta_keys(metric)
    if keys and keys[0] in meta and keys[1] in meta:
        return float(meta[keys[0]]), float(meta[keys[1]])
    fn = None if metric.is_default else metric.fn()
    return (evaluate(model, data.test_x, data.test_y, metric=fn),
            evaluate(model, data.val_x, data.val_y, metric=fn))


def _save_atomic(path: Path, model: nn.Module, meta: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    state = {k: t.detach().contiguous() for k, t in model.state_dict().items()}
    save_file(state, str(tmp), metadata=meta)
    os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the whole new one


def cache_path(model_cfg: ModelConfig, data_cfg: DataConfig, train_cfg: TrainConfig, seed: int,
               cache_dir: Path, data: Splits, built: nn.Module) -> Path:
    """Where get_baseline keeps (or would keep) this baseline (`built`: a fresh model)."""
    key = cache_key(model_cfg, data_cfg, train_cfg, seed, data_digest=data.digest, built=built)
    return _entry(cache_dir, model_cfg, data_cfg, key)


def _entry(cache_dir: Path, model_cfg: ModelConfig, data_cfg: DataConfig, key: str) -> Path:
    return cache_dir / f"{model_cfg.name}-{data_cfg.name}-{key}.safetensors"


def cached_baseline(model_cfg: ModelConfig, data_cfg: DataConfig, train_cfg: TrainConfig,
                    seed: int, data: Splits, cache_dir: Path) -> tuple[nn.Module, Path] | None:
    """The baseline get_baseline would use for this config, read only: (model, its file) from
    the checkpoint or the cache, or None when none is cached (nothing is trained, written or
    deleted here)."""
    model = build_model(model_cfg, data.spec)
    if model_cfg.checkpoint:
        ckpt.load_into(model, model_cfg.checkpoint)
        return model.eval(), Path(model_cfg.checkpoint)
    path = cache_path(model_cfg, data_cfg, train_cfg, seed, cache_dir, data, model)
    if not path.exists():
        return None
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
    metric: MetricConfig | None = None,
) -> Baseline:
    """Return the dense baseline: the checkpoint as it is, else trained, cached when possible."""
    torch.manual_seed(seed)
    model = build_model(model_cfg, data.spec)
    if model_cfg.checkpoint:
        return from_checkpoint(model, model_cfg.checkpoint, data, metric)
    key = cache_key(model_cfg, data_cfg, train_cfg, seed, data_digest=data.digest, built=model)
    path = _entry(cache_dir, model_cfg, data_cfg, key)
    meta = _try_load(path, model)
    if meta is None:
        with _training_lock(path):
            meta = _try_load(path, model)  # another process may have trained it meanwhile
            if meta is None:
                return _train_and_cache(model, key, path, model_cfg, data_cfg, train_cfg,
                                        seed, data, metric)
    log.info("baseline cache hit: %s (no training)", path)
    model.eval()
    return Baseline(model, path, True, 0.0, *_accuracies(model, data, meta, metric),
                    source="cache")


def from_checkpoint(model: nn.Module, path: str, data: Splits,
                    metric: MetricConfig | None = None) -> Baseline:
    """The user's trained weights, evaluated as they are on val and test: never retrained."""
    ckpt.load_into(model, path)
    model.eval()
    sha = ckpt.sha256(path)
    acc, val_acc = _accuracies(model, data, {}, metric)
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
                     data_cfg: DataConfig, train_cfg: TrainConfig, seed: int, data: Splits,
                     metric: MetricConfig | None = None) -> Baseline:
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
    metric = metric or MetricConfig()
    acc, val_acc = _accuracies(model, data, {}, metric)
    meta = {"key": key, "train_seconds": f"{seconds:.3f}"}
    keys = _meta_keys(metric)
    if keys:  # repr keeps every digit: the float read back is the one evaluated
        meta.update({keys[0]: repr(acc), keys[1]: repr(val_acc)})
    _save_atomic(path, model, meta)
    log.info("baseline trained in %.1fs (test %s %.4f), cached at %s", seconds,
             "accuracy" if metric.is_default else metric.name, acc, path)
    return Baseline(model, path, False, seconds, acc, val_acc)
