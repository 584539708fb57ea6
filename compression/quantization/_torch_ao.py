"""The one module that touches `torch.ao.quantization` (deprecated, but it has the fastest int8 CPU
kernels in torch 2.13). Moving to torchao is a change to this file only."""

from __future__ import annotations

import warnings

import torch
from torch import nn

ENGINES = ["x86", "fbgemm", "onednn", "qnnpack"]

LAYER_TYPES: dict[str, type[nn.Module]] = {"linear": nn.Linear}


def set_engine(engine: str) -> None:
    if engine not in torch.backends.quantized.supported_engines:
        raise RuntimeError(
            f"quantization.engine={engine!r} is not supported by this torch build; "
            f"supported: {', '.join(torch.backends.quantized.supported_engines)}"
        )
    torch.backends.quantized.engine = engine


def quantize_dynamic_int8(model: nn.Module, layers: list[str], engine: str) -> nn.Module:
    """Weights to int8 (per-tensor symmetric), activations quantized on the fly per batch."""
    set_engine(engine)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(model, {LAYER_TYPES[k] for k in layers}, dtype=torch.qint8)
