"""What the data section of a config says, what a model learns about its input, and the splits."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from compression.core import validation as v
from compression.core.errors import ConfigError
from compression.core.lazy import np, torch
from compression.core.registry import Registry

# `data.name` -> a function reading a `Raw` from a DataConfig; each loader module registers its
# own (compression.data.registry.register_dataset). Here, torch-free, for the config check.
Loader = Callable[["DataConfig"], "Raw"]
DATASETS: Registry[Loader] = Registry("data.name")


@dataclass
class DataConfig:
    name: str = "digits"
    root: str | None = None  # the file or folder (fashion_mnist: IDX folder; None = Debian's)
    split_seed: int = 0  # fixed across trials so every run sees the same split
    val_fraction: float = 0.2  # share of the training pool held out for validation
    test_fraction: float = 0.2  # when the data have no test split of their own
    limit: int | None = None  # cap on training examples, for quick experiments and tests
    context: int = 64  # text: bytes per example (the model's context length)
    label: str = "label"  # csv: the label column
    image_size: int | None = None  # image_folder: resize to this side (None: the first image's)
    channels: int | None = None  # image_folder: 1 or 3 (None: from the first image)
    num_classes: int | None = None  # None: inferred (labels 0..max, or the class folders)
    normalize: bool = True  # standardize with train statistics; false: inputs as stored
    num_workers: int = 0  # DataLoader workers when the data stream from disk
    stream: bool | None = None  # None: stream when the decoded data exceed max_memory_mb
    max_memory_mb: float = 1024.0
    target: str | None = None  # custom: `_target_`, a factory returning the splits
    kwargs: dict[str, Any] = field(default_factory=dict)  # custom: the factory's arguments

    def __post_init__(self) -> None:
        v.one_of("data.name", self.name, sorted(DATASETS))
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
        v.in_range("data.context", self.context, 2, None, integer=True)
        if self.root is not None and not isinstance(self.root, str):
            raise ConfigError(f"data.root={self.root!r} must be a path or null")
        if self.image_size is not None:
            v.in_range("data.image_size", self.image_size, 1, None, integer=True)
        if self.channels is not None:
            v.one_of("data.channels", self.channels, [1, 3])
        if self.num_classes is not None:
            v.in_range("data.num_classes", self.num_classes, 2, None, integer=True)
        v.in_range("data.num_workers", self.num_workers, 0, None, integer=True)
        v.one_of("data.stream", self.stream, [None, True, False])
        v.one_of("data.normalize", self.normalize, [True, False])
        v.in_range("data.max_memory_mb", self.max_memory_mb, 0, None, lo_open=True)
        if not isinstance(self.label, str) or not self.label:
            raise ConfigError(f"data.label={self.label!r} must be a column name")
        if self.target is not None and not (isinstance(self.target, str) and "." in self.target):
            raise ConfigError(f"data._target_={self.target!r} must be a dotted path to a factory")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DataConfig:
        """From a config section: `_target_` and, with it, the factory's own arguments."""
        from dataclasses import fields

        values = dict(values)
        target = values.pop("_target_", None)
        allowed = {f.name for f in fields(cls)} - {"target", "kwargs"}
        unknown = sorted(set(values) - allowed)
        if unknown and target is None:
            raise ConfigError(f"data.{unknown[0]} is not a valid key here; allowed: "
                              f"{', '.join(sorted(allowed))} (or _target_ for data=custom)")
        kwargs = {k: values.pop(k) for k in unknown}
        return cls(**values, target=target, kwargs=kwargs)


@dataclass(frozen=True)
class DataSpec:
    """What a model needs to know about its input. `shape` is one example's shape; when absent
    it is the square image (in_channels, image_size, image_size). `sequence`: one label per
    input position (data=text: the next byte after each), so a model gives (N, C, T) scores."""

    name: str
    in_channels: int
    image_size: int
    num_classes: int
    shape: tuple[int, ...] | None = None
    sequence: bool = False

    def __post_init__(self) -> None:
        if self.shape is not None:  # a JSON header gives a list back
            object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.shape or (self.in_channels, self.image_size, self.image_size)

    @property
    def features(self) -> int:
        """Inputs per example once flattened (what a fully connected first layer takes)."""
        return math.prod(self.input_shape)

    def example_input(self, batch: int = 1) -> torch.Tensor:
        return torch.zeros(batch, *self.input_shape)


# An input split: a tensor in memory, or a lazy view that reads examples from disk
# (compression.data.streaming.Lazy); both answer len(), slicing and index tensors.
Inputs = Any


@dataclass
class Splits:
    spec: DataSpec
    train_x: Inputs
    train_y: torch.Tensor
    val_x: Inputs
    val_y: torch.Tensor
    test_x: Inputs
    test_y: torch.Tensor
    digest: str = ""  # content hash of the data (MLflow dataset digest, baseline cache key)
    source: str = ""  # where the data came from (file, folder, factory)

    def sizes(self) -> str:
        return f"train={len(self.train_y)} val={len(self.val_y)} test={len(self.test_y)}"

    @property
    def streamed(self) -> bool:
        return not isinstance(self.train_x, torch.Tensor)


Pair = tuple[Any, "np.ndarray"]  # (inputs, labels): arrays, or a lazy source with its labels


@dataclass
class Raw:
    """What a loader reads: the splits the data come with (val / test may be missing)."""

    train: Pair
    val: Pair | None = None
    test: Pair | None = None
    source: str = ""
    num_classes: int | None = None  # known from the data themselves (class folders)
    digest: str | None = None  # given by loaders that hash files rather than arrays
    sequence: bool = False  # labels are one class per input position (text: the next byte)
