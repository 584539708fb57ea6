"""Pruning methods. Importing this package registers every method in PRUNERS: each public
module here is imported (registry.discover), and registers its own (none, unstructured, random,
block, nm, structured, lowrank, mask, small_dense, sparsegpt, the wanda criterion, and the
sparse-kernel and head-removal loader transforms)."""

from compression.core.registry import discover
from compression.pruning.base import (
    PRUNERS,
    MaskSet,
    PruneSession,
    PruningConfig,
    check,
    layer_targets,
    select_layers,
)

MODULES = discover(__name__, __path__)

__all__ = ["PRUNERS", "MaskSet", "PruneSession", "PruningConfig", "check", "layer_targets",
           "select_layers"]
