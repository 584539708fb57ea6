"""Unstructured magnitude pruning: zero the lowest-|w| weights, per layer or across layers."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from compression import validation as v
from compression.pruning.base import PRUNERS, MaskSet, PruneSession, PruningConfig, select_layers


@dataclass
class DenseConfig(PruningConfig):
    """`none`: keep the dense baseline (no pruning, no fine-tuning)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sparsity != 0:
            v.one_of("pruning.sparsity (with pruning.method=none)", self.sparsity, [0, 0.0])


@dataclass
class UnstructuredConfig(PruningConfig):
    method: str = "unstructured"
    sparsity: float = 0.5
    scope: str = "layer"  # "layer": each layer to `sparsity`; "global": one threshold for all

    def __post_init__(self) -> None:
        super().__post_init__()
        v.one_of("pruning.scope", self.scope, ["layer", "global"])


@PRUNERS.register("none", DenseConfig)
def prune_none(model: nn.Module, cfg: PruningConfig, session: PruneSession) -> MaskSet:
    return MaskSet()


def _lowest_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean keep-mask with exactly `k` False entries at the lowest scores (ties by index)."""
    keep = torch.ones(scores.numel(), dtype=torch.bool)
    if k > 0:
        keep[torch.topk(scores.flatten(), k, largest=False, sorted=False).indices] = False
    return keep.view_as(scores)


def magnitude_masks(layers: dict[str, nn.Module], sparsity: float, scope: str) -> MaskSet:
    weights = {name: m.weight.detach().abs() for name, m in layers.items()}
    if scope == "layer":
        return MaskSet(
            {n: _lowest_k_mask(w, round(sparsity * w.numel())) for n, w in weights.items()}
        )
    flat = torch.cat([w.flatten() for w in weights.values()])
    keep = _lowest_k_mask(flat, round(sparsity * flat.numel()))
    masks, offset = {}, 0
    for name, w in weights.items():
        masks[name] = keep[offset : offset + w.numel()].view_as(w)
        offset += w.numel()
    return MaskSet(masks)


@PRUNERS.register("unstructured", UnstructuredConfig)
def prune_unstructured(model: nn.Module, cfg: UnstructuredConfig, session: PruneSession) -> MaskSet:
    masks = magnitude_masks(select_layers(model, cfg), cfg.sparsity, cfg.scope)
    masks.apply(model)
    session.finetune(model, masks)
    return masks
