"""Pruning methods. Importing this package registers every built-in method in PRUNERS:
none, unstructured, random, block, nm, structured, lowrank, mask, sparsegpt (and the
sparse-kernel loader transform), and the wanda criterion."""

from compression.pruning import (  # noqa: F401  (registers handlers)
    block,
    heads,
    lowrank,
    masks,
    nm,
    small_dense,
    sparse_kernel,
    sparsegpt,
    structured,
    unstructured,
    wanda,
)
from compression.pruning.base import (
    PRUNERS,
    MaskSet,
    PruneSession,
    PruningConfig,
    check,
    layer_targets,
    select_layers,
)

__all__ = ["PRUNERS", "MaskSet", "PruneSession", "PruningConfig", "check", "layer_targets",
           "select_layers"]
