"""Datasets as in-memory tensors with fixed, seeded train / val / test splits.

Both built-in datasets are small enough to hold whole in memory, which makes batching a slice
instead of a DataLoader round trip (the DataLoader dominated epoch time on 8x8 digits).
Val is what a sweep optimizes; test is only ever reported.
"""

from __future__ import annotations

import gzip
import importlib.util
import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from compression import validation as v
from compression.errors import ConfigError, DatasetNotFoundError
from compression.registry import registrar

log = logging.getLogger(__name__)

FASHION_MNIST_DEBIAN_ROOT = "/usr/share/datasets/fashion-mnist"


@dataclass
class DataConfig:
    name: str = "digits"
    root: str | None = None  # folder of IDX files (fashion_mnist); None = the Debian package's
    split_seed: int = 0  # fixed across trials so every run sees the same split
    val_fraction: float = 0.2  # share of the training pool held out for validation
    test_fraction: float = 0.2  # digits only: fashion_mnist has an official test set
    limit: int | None = None  # cap on training examples, for quick experiments and tests

    def __post_init__(self) -> None:
        v.one_of("data.name", self.name, DATASETS)
        v.number("data.split_seed", self.split_seed, integer=True)
        v.in_range("data.val_fraction", self.val_fraction, 0, 1, lo_open=True, hi_open=True)
        v.in_range("data.test_fraction", self.test_fraction, 0, 1, lo_open=True, hi_open=True)
        if self.val_fraction + self.test_fraction >= 1:
            raise ConfigError(
                f"data.val_fraction + data.test_fraction = "
                f"{self.val_fraction + self.test_fraction:g} must be below 1"
            )
        if self.limit is not None:
            v.in_range("data.limit", self.limit, 1, None, integer=True)
        if self.root is not None and not isinstance(self.root, str):
            raise ConfigError(f"data.root={self.root!r} must be a path or null")


@dataclass(frozen=True)
class DataSpec:
    """What a model needs to know about its input."""

    name: str
    in_channels: int
    image_size: int
    num_classes: int

    def example_input(self, batch: int = 1) -> torch.Tensor:
        return torch.zeros(batch, self.in_channels, self.image_size, self.image_size)


@dataclass
class Splits:
    spec: DataSpec
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    def sizes(self) -> str:
        return f"train={len(self.train_y)} val={len(self.val_y)} test={len(self.test_y)}"


# A loader returns (pool_x, pool_y, test_x, test_y); test may be None when the dataset has no
# official test split and one must be carved out of the pool.
Loader = Callable[[DataConfig], tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]]
DATASETS: dict[str, Loader] = {}


register_dataset = registrar(DATASETS)


def _digits_file() -> Path | None:
    """scikit-learn's bundled copy of the UCI digits (a gzipped CSV: 64 pixels, then the
    label), found without importing scikit-learn, whose import costs about 1 s per process
    (the sweep's and each parallel worker's)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    return path if path.is_file() else None


@register_dataset("digits")
def _load_digits(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, None, None]:
    path = _digits_file()
    if path is not None:
        table = np.loadtxt(path, delimiter=",", dtype=np.float32)
        images, target = table[:, :-1].reshape(-1, 8, 8), table[:, -1]
    else:  # another layout of the package: its public loader
        from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

        d = load_digits()
        images, target = d.images, d.target
    x = (images.astype(np.float32) / 16.0)[:, None, :, :]  # (1797, 1, 8, 8) in [0, 1]
    return x, target.astype(np.int64), None, None


def _find_idx(root: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (root / name).is_file():
            return root / name
    return None


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) as used by MNIST and Fashion-MNIST."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} but holds {data.size} bytes")
    return data.reshape(dims)


@register_dataset("fashion_mnist")
def _load_fashion(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    root = Path(cfg.root or FASHION_MNIST_DEBIAN_ROOT)
    stems = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    paths = [_find_idx(root, s) for s in stems]
    if any(p is None for p in paths):
        missing = [s for s, p in zip(stems, paths, strict=True) if p is None]
        raise DatasetNotFoundError(
            f"data.name=fashion_mnist: {', '.join(missing)}[.gz] not found in {root}; "
            "install them with `apt-get install dataset-fashion-mnist` or set data.root to a "
            "folder of (Fashion-)MNIST IDX files"
        )
    tx, ty, ex, ey = (read_idx(p) for p in paths)  # type: ignore[arg-type]
    to_float = lambda a: (a.astype(np.float32) / 255.0)[:, None, :, :]  # noqa: E731
    return to_float(tx), ty.astype(np.int64), to_float(ex), ey.astype(np.int64)


# Splits already built in this process, by config: every job of a sweep that runs in one process
# (Hydra's basic launcher, a joblib worker) reuses them instead of re-reading and re-normalizing
# the files (0.15 s per job on digits, seconds on fashion_mnist). Consumers only ever slice or
# index them, never write into them.
_LOADED: dict[str, Splits] = {}


def load(cfg: DataConfig) -> Splits:
    """Load a dataset and split it deterministically by `cfg.split_seed` (memoized per process)."""
    key = repr(sorted(asdict(cfg).items()))
    if key not in _LOADED:
        _LOADED[key] = _load(cfg)
    return _LOADED[key]


def _load(cfg: DataConfig) -> Splits:
    pool_x, pool_y, test_x, test_y = DATASETS[cfg.name](cfg)
    rng = np.random.default_rng(cfg.split_seed)
    order = rng.permutation(len(pool_y))
    if test_x is None:
        n_test = round(cfg.test_fraction * len(order))
        test_idx, order = order[:n_test], order[n_test:]
        test_x, test_y = pool_x[test_idx], pool_y[test_idx]
    n_val = round(cfg.val_fraction * len(pool_y))
    val_idx, train_idx = order[:n_val], order[n_val:]
    if cfg.limit is not None:
        train_idx = train_idx[: cfg.limit]
    # Standardize with training statistics only, so val/test never leak into preprocessing.
    train_x = pool_x[train_idx]
    mean, std = float(train_x.mean()), float(train_x.std()) or 1.0
    norm = lambda a: torch.from_numpy((a - mean) / std)  # noqa: E731
    spec = DataSpec(cfg.name, pool_x.shape[1], pool_x.shape[2], int(pool_y.max()) + 1)
    splits = Splits(
        spec,
        norm(train_x), torch.from_numpy(pool_y[train_idx]),
        norm(pool_x[val_idx]), torch.from_numpy(pool_y[val_idx]),
        norm(test_x), torch.from_numpy(test_y),
    )
    log.info("data %s: %s", cfg.name, splits.sizes())
    return splits


def batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield minibatches; shuffled when a generator is given (training), in order otherwise."""
    n = len(y)
    order = torch.randperm(n, generator=generator) if generator is not None else None
    for start in range(0, n, batch_size):
        if order is None:
            yield x[start : start + batch_size], y[start : start + batch_size]
        else:
            idx = order[start : start + batch_size]
            yield x[idx], y[idx]
