"""Datasets with fixed, seeded train / val / test splits: the built-ins (digits, fashion_mnist)
and the user's own (npz, image_folder, csv, custom), each a module registering its loader.

Small data are held in memory as tensors; data too large for memory stream from disk
(compression.data.streaming). Every public module is imported (`registry.discover`, as in
pruning/, quantization/ and runtime/), so a new format is its module; `_mlflow_input` needs
MLflow and is imported where a run logs its dataset.
"""

from compression.core.registry import discover
from compression.data.builtin import FASHION_MNIST_DEBIAN_ROOT, _digits_file, read_idx
from compression.data.config import DataConfig, DataSpec, Raw, Splits
from compression.data.registry import DATASETS, register_dataset
from compression.data.splits import _LOADED, _load, as_arrays, build, load
from compression.data.streaming import DataError, Lazy, batches

MODULES = discover(__name__, __path__)

__all__ = [
    "DATASETS",
    "FASHION_MNIST_DEBIAN_ROOT",
    "_LOADED",
    "DataConfig",
    "DataError",
    "DataSpec",
    "Lazy",
    "Raw",
    "Splits",
    "_digits_file",
    "_load",
    "as_arrays",
    "batches",
    "build",
    "load",
    "read_idx",
    "register_dataset",
]
