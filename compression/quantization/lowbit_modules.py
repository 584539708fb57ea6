"""The low-bit layers (packed weights, fake quantization) under their public name. They live in
`_lowbit_modules.py`, a helper that discovery skips, because classes deriving from nn.Module need
torch when they are made; this module imports it on the first name read from it, so that
discovering the quantization modes (a config check) needs no torch."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    from compression.quantization import _lowbit_modules

    return getattr(_lowbit_modules, name)
