"""Sparse kernels for very sparse Linear layers (`pruning.sparse_kernel=true`).

Masked pruning leaves dense weights full of zeros, and a dense kernel multiplies by every one of
them, so by itself it gives no speed-up. This option swaps each selected Linear layer that is at
least `pruning.sparse_kernel_min` sparse for a `SparseLinear`, which keeps its weight in CSR form
(int32 indices) and multiplies with torch's sparse CSR kernel (MKL's on x86 builds). Measured on
one AVX-512 core (torch 2.13, 300x784 layer): at batch 256 CSR is 0.55x dense at 50% sparsity,
2.6x at 90%, 4.5x at 95% and 9x at 99%; at batch 1 it only pays from about 95% on large layers
(small layers such as 100x300 stay slower than dense even at 99%), hence the 0.9 default and the
measured `speedup` that every run logs. Convolutions keep dense kernels.

The artifact stores the weight as any other (dense or bitmask-encoded, whichever is smaller), so
its size does not change; the loader replays the swap (a recorded transform) and builds the CSR
form from it. In memory a SparseLinear holds only the CSR tensors, which is what `model_bytes`
and the per-layer `bytes` count.
"""

from __future__ import annotations

import copy
from typing import Any

from compression.artifact.transforms import register_transform
from compression.core.errors import ConfigError, first_line
from compression.core.lazy import nn, torch
from compression.pruning.base import PruneResult, PruningConfig, select_layers

KIND = "sparse_linear"


def __getattr__(name: str) -> Any:  # SparseLinear: made from torch when first asked for
    if name == "SparseLinear":
        from compression.pruning._sparse_linear import SparseLinear

        return SparseLinear
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def sparse_layers(model: nn.Module, cfg: PruningConfig) -> list[str]:
    """Selected Linear layers whose weight is at least `cfg.sparse_kernel_min` zeros."""
    chosen = []
    for name, m in select_layers(model, cfg).items():
        if type(m) is nn.Linear:  # not subclasses (attention's out_proj reads .weight itself)
            zeros = float((m.weight == 0).float().mean())
            if zeros >= cfg.sparse_kernel_min:
                chosen.append(name)
    return chosen


def swap_(model: nn.Module, names: list[str]) -> nn.Module:
    """Replace the Linear layers `names` of `model` by SparseLinear (in place; returns it)."""
    from compression.pruning._sparse_linear import SparseLinear

    for name in names:
        model.set_submodule(name, SparseLinear.from_linear(model.get_submodule(name)))
    return model


def check_swappable(model: nn.Module, cfg: PruningConfig, example: torch.Tensor) -> None:
    """Before training: swap every selected Linear of a copy (whatever its sparsity) and run it
    once, so a model that reads a Linear's `.weight` itself (tied weights, F.linear(x,
    self.fc.weight)) fails now, in one line, not after training."""
    twin = copy.deepcopy(model).eval()
    swap_(twin, [n for n, m in select_layers(twin, cfg).items() if type(m) is nn.Linear])
    try:
        with torch.no_grad():
            twin(example)
    except Exception as e:
        raise ConfigError(f"pruning.sparse_kernel=true: the model does not run with its Linear "
                          f"layers swapped for sparse ones ({type(e).__name__}: "
                          f"{first_line(e, 200)}); it "
                          "may read a layer's weight itself; exclude such layers "
                          "(pruning.exclude=[...])") from None


def to_sparse_kernels(model: nn.Module, cfg: PruningConfig) -> tuple[nn.Module, PruneResult]:
    """Swap the layers `sparse_layers` picks for SparseLinear (in place; returns `model`) with
    the swap recorded for the artifact loader and its metric."""
    names = sparse_layers(model, cfg)
    swap_(model, names)
    return model, PruneResult(transforms=[{"kind": KIND, "layers": names}],
                              metrics={"sparse_kernel_layers": float(len(names))})


def apply_sparse_record(model: nn.Module, record: dict[str, Any]) -> nn.Module:
    """Loader transform: SparseLinear shells (the weights are loaded afterwards)."""
    from compression.pruning._sparse_linear import SparseLinear

    for name in record["layers"]:
        m = model.get_submodule(name)
        model.set_submodule(name, SparseLinear(m.in_features, m.out_features,
                                               m.bias is not None))
    return model


register_transform(KIND, apply_sparse_record)
