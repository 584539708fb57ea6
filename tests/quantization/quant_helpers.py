"""Helpers for quantization tests (a module of its own: `conftest` is ambiguous across test
folders)."""

from __future__ import annotations

import torch
from torch import nn

from compression.pruning import MaskSet


def prune(model: nn.Module, sparsity: float) -> MaskSet:
    """Magnitude-prune every Linear/Conv of `model` in place; returns the masks."""
    masks = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear | nn.Conv2d):
            w = m.weight.detach().abs().flatten()
            k = round(sparsity * w.numel())
            keep = torch.ones_like(w, dtype=torch.bool)
            keep[torch.topk(w, k, largest=False).indices] = False
            masks[name] = keep.view_as(m.weight)
    mask_set = MaskSet(masks)  # pruning's own container: QAT reapplies it after each step
    mask_set.apply(model)
    return mask_set
