"""Datasets: fixed seeded splits, the IDX reader, and a clear error when files are missing."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from compression import data
from compression.core.errors import DatasetNotFoundError
from compression.data import DataConfig, load, read_idx


def test_digits_splits_are_fixed_disjoint_and_complete() -> None:
    a, b = load(DataConfig()), data._load(DataConfig())  # memoized vs built afresh
    assert torch.equal(a.val_x, b.val_x) and torch.equal(a.test_y, b.test_y)
    assert len(a.train_y) + len(a.val_y) + len(a.test_y) == 1797
    rows = lambda t: {tuple(r.flatten().tolist()) for r in t}  # noqa: E731
    assert not rows(a.val_x) & rows(a.test_x)  # no example in two splits
    assert a.spec.in_channels == 1 and a.spec.image_size == 8 and a.spec.num_classes == 10


def test_split_seed_changes_the_split_and_limit_caps_training() -> None:
    a, b = load(DataConfig(split_seed=0)), load(DataConfig(split_seed=1))
    assert not torch.equal(a.test_y, b.test_y)
    assert len(load(DataConfig(limit=100)).train_y) == 100


def test_digits_file_read_directly_equals_scikit_learns_loader() -> None:
    from sklearn.datasets import load_digits

    x, y = data.DATASETS["digits"](DataConfig()).train
    ref = load_digits()
    assert data._digits_file() is not None  # the fast path is the one taken here
    assert np.array_equal(x[:, 0] * 16.0, ref.images) and np.array_equal(y, ref.target)
    assert x.dtype == np.float32 and y.dtype == np.int64


def test_splits_are_built_once_per_process_and_config() -> None:
    """Jobs of a sweep in one process share the splits instead of re-reading the files."""
    assert load(DataConfig(limit=50)) is load(DataConfig(limit=50))
    assert load(DataConfig(limit=50)) is not load(DataConfig(limit=60))


def _write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_reads_idx_files_from_a_configured_root(tmp_path, compress) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 50), ("t10k", 20)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte",
                   rng.integers(0, 256, (n, 28, 28)), compress)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, compress)
    splits = load(DataConfig(name="fashion_mnist", root=str(tmp_path), val_fraction=0.2))
    assert (len(splits.train_y), len(splits.val_y), len(splits.test_y)) == (40, 10, 20)
    assert splits.spec.image_size == 28 and splits.train_x.shape[1:] == (1, 28, 28)
    assert read_idx(next(tmp_path.glob("t10k-labels*"))).tolist() == list(np.arange(20) % 10)


def test_missing_dataset_says_how_to_get_it(tmp_path) -> None:
    with pytest.raises(DatasetNotFoundError) as err:
        load(DataConfig(name="fashion_mnist", root=str(tmp_path)))
    assert "apt-get install dataset-fashion-mnist" in str(err.value)
    assert "data.root" in str(err.value) and "\n" not in str(err.value)
