"""Data too large for memory: examples read from disk per batch through a DataLoader.

A `Lazy` split stands where an in-memory split tensor would: it answers len(), slicing and
index tensors (so calibration, latency and scoring code takes either), and `batches` iterates it
through a `torch.utils.data.DataLoader` with `data.num_workers` workers. Labels always stay in
memory (8 bytes an example). Normalization is applied per example with train statistics.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from compression.core.errors import ConfigError, first_line
from compression.core.lazy import np, torch

if TYPE_CHECKING:
    from torch.utils.data import DataLoader, Dataset


class DataError(ConfigError):
    """Bad user data: one line naming the file, split or value at fault (exit 2)."""


@contextlib.contextmanager
def worker_errors() -> Iterator[None]:
    """A DataError raised in a DataLoader worker comes back with the worker's traceback in its
    message; give the original one line back."""
    try:
        yield
    except DataError as e:
        lines = [ln for ln in str(e).splitlines() if "DataError: " in ln]
        if "DataLoader worker" in str(e) and lines:
            raise DataError(lines[-1].split("DataError: ", 1)[1]) from None
        raise


def as_example(item: Any, where: str) -> tuple[np.ndarray, int]:
    """One (x, y) pair of a user Dataset as (float32 array, int label)."""
    if not isinstance(item, tuple | list) or len(item) != 2:
        raise DataError(f"{where} yields {type(item).__name__}; each item must be (x, label)")
    x, y = item
    x = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    try:
        return x.astype(np.float32, copy=False), int(y)
    except (TypeError, ValueError) as e:
        raise DataError(f"{where}: an item is not numeric: {first_line(e)}") from None


class Lazy:
    """`indices` of `dataset` (items (x, y)), normalized by (mean, std), read on demand."""

    def __init__(self, dataset: Dataset, indices: np.ndarray, mean: np.ndarray | float = 0.0,
                 std: np.ndarray | float = 1.0, num_workers: int = 0, where: str = "data"
                 ) -> None:
        self.dataset, self.indices = dataset, np.asarray(indices, dtype=np.int64)
        self.mean, self.std = np.float32(mean), np.float32(std)
        self.num_workers, self.where = num_workers, where

    def __len__(self) -> int:
        return len(self.indices)

    def example(self, i: int) -> torch.Tensor:
        x, _ = as_example(self.dataset[int(self.indices[i])], self.where)
        return torch.from_numpy((x - self.mean) / self.std)

    def __getitem__(self, key: int | slice | Sequence[int] | torch.Tensor) -> torch.Tensor:
        if isinstance(key, int | np.integer):
            return self.example(int(key))
        picks = range(len(self))[key] if isinstance(key, slice) else [int(k) for k in key]
        if len(picks) == 0:
            return torch.zeros(0, *self.example(0).shape)
        return torch.stack([self.example(i) for i in picks])

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.example(0).shape)

    def loader(self, labels: torch.Tensor, batch_size: int, order: list[int] | None
               ) -> DataLoader:
        return torch.utils.data.DataLoader(
            _Pairs(self, labels), batch_size=batch_size, sampler=order,
            num_workers=self.num_workers, persistent_workers=False)


class _Pairs:  # a map-style Dataset (no base class: torch is imported on use)
    def __init__(self, x: Lazy, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x.example(i), self.y[i]


def batches(
    x: Any, y: torch.Tensor, batch_size: int, generator: torch.Generator | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield minibatches; shuffled when a generator is given (training), in order otherwise.
    In-memory tensors are sliced (a DataLoader round trip dominated epoch time on 8x8 digits);
    lazy splits go through a DataLoader, in the same seeded order."""
    n = len(y)
    order = torch.randperm(n, generator=generator) if generator is not None else None
    if isinstance(x, Lazy):
        with worker_errors():
            yield from x.loader(y, batch_size, None if order is None else order.tolist())
        return
    for start in range(0, n, batch_size):
        if order is None:
            yield x[start : start + batch_size], y[start : start + batch_size]
        else:
            idx = order[start : start + batch_size]
            yield x[idx], y[idx]


class _Raw:  # a map-style Dataset
    """Unnormalized examples of `indices`, for the statistics pass."""

    def __init__(self, dataset: Dataset, indices: np.ndarray, where: str) -> None:
        self.dataset, self.indices, self.where = dataset, indices, where

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(as_example(self.dataset[int(self.indices[i])], self.where)[0])


def train_statistics(dataset: Dataset, indices: np.ndarray, num_workers: int, where: str,
                     batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over the train examples only, per channel (axis 0 of an example), in one
    streamed pass with float64 sums; shapes broadcast against one example (C, 1, 1)."""
    loader = torch.utils.data.DataLoader(_Raw(dataset, indices, where), batch_size=batch_size,
                        num_workers=num_workers)
    total = total_sq = None
    count = 0
    with worker_errors():
        for xb in loader:  # xb: (B, C, ...) -> per-channel sums over batch and other axes
            xb = xb.double()
            axes = [0, *range(2, xb.dim())]
            s, sq = xb.sum(dim=axes), (xb * xb).sum(dim=axes)
            total = s if total is None else total + s
            total_sq = sq if total_sq is None else total_sq + sq
            count += xb.numel() // xb.shape[1]
    assert total is not None and total_sq is not None and count
    mean = (total / count).numpy()
    std = np.sqrt(np.maximum((total_sq / count).numpy() - mean**2, 0.0))
    std[std == 0] = 1.0
    extra = (1,) * (xb.dim() - 2)  # (C,) -> (C, 1, 1) for images; (F,) stays for tables
    return mean.reshape(-1, *extra).astype(np.float32), std.reshape(-1, *extra).astype(np.float32)
