"""Pruning methods. Importing this package registers every built-in method in PRUNERS."""

from compression.pruning import unstructured  # noqa: F401  (registers handlers)
from compression.pruning.base import PRUNERS, MaskSet, PruneSession, PruningConfig, select_layers

__all__ = ["PRUNERS", "MaskSet", "PruneSession", "PruningConfig", "select_layers"]
