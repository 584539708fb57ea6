"""The dataset loaders' registry: `data.name` -> a function reading a `Raw` from a DataConfig."""

from __future__ import annotations

from collections.abc import Callable

from compression.data.config import DATASET_NAMES, DataConfig, Raw

Loader = Callable[[DataConfig], Raw]
DATASETS: dict[str, Loader] = {}


def register_dataset(name: str) -> Callable[[Loader], Loader]:
    def deco(fn: Loader) -> Loader:
        DATASETS[name] = fn
        if name not in DATASET_NAMES:
            DATASET_NAMES.append(name)
        return fn

    return deco
