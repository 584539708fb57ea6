"""The dataset loaders' registry: `data.name` -> a function reading a `Raw` from a DataConfig."""

from __future__ import annotations

from collections.abc import Callable

from compression.data.config import DATASETS, Loader

register_dataset: Callable[[str], Callable[[Loader], Loader]] = DATASETS.register
