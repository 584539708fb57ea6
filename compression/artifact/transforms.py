"""Structural transforms the artifact loader replays (channel removal, low-rank factorization).

A transform is recorded in the artifact header as {"kind": name, ...}; its function rebuilds the
changed module structure before weights are loaded. This module imports nothing of ours, so
pruning methods can register here at import time whatever was imported first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from compression.core.lazy import nn
from compression.core.registry import Registry

Transform = Callable[["nn.Module", dict[str, Any]], "nn.Module"]
# a closed registry, like the models': a kind not registered here is refused, never imported
TRANSFORMS: Registry[Transform] = Registry("artifact transform kind")


def register_transform(kind: str, fn: Transform) -> None:
    TRANSFORMS.add(kind, fn)
