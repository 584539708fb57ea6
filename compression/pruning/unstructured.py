"""Unstructured pruning: zero individual weights with the lowest scores, per layer or across
layers (`none`, `unstructured`, `random`)."""

from __future__ import annotations

from dataclasses import dataclass

from compression.core import validation as v
from compression.core.errors import ConfigError
from compression.core.lazy import nn, torch
from compression.pruning.allocation import ALLOCATIONS
from compression.pruning.base import PRUNERS, MaskSet, PruneSession, PruningConfig
from compression.pruning.criteria import CRITERIA
from compression.pruning.schedules import (
    MaskPruningConfig,
    PerLayerPattern,
    lowest_k_mask,
    no_revival,
    prune_with,
)


@dataclass
class DenseConfig(PruningConfig):
    """`none`: keep the dense baseline (no pruning, no fine-tuning). `match_nonzero` records the
    target of a small-dense run (pruning=small_dense sets model.width from it)."""

    match_nonzero: int | None = None  # pruning=small_dense: a pruned run's nonzero_params

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sparsity != 0:
            v.one_of("pruning.sparsity (with pruning.method=none)", self.sparsity, [0, 0.0])
        if self.match_nonzero is not None:
            v.in_range("pruning.match_nonzero", self.match_nonzero, 1, None, integer=True)

    def no_zeros_because(self) -> str:
        return "keeps the model dense"

    def prunes(self) -> bool:
        return False

    def run_label(self) -> str:
        return "dense"


@dataclass
class UnstructuredConfig(MaskPruningConfig):
    method: str = "unstructured"
    sparsity: float = 0.5
    scope: str = "layer"  # layer: each layer to `sparsity`; global: one threshold across layers
    # uniform: every layer at `sparsity`; sensitivity: per-layer targets from a sensitivity
    # pass, the same total zeros (pruning/allocation.py)
    allocation: str = "uniform"

    def __post_init__(self) -> None:
        super().__post_init__()
        v.one_of("pruning.scope", self.scope, ["layer", "global"])
        v.one_of("pruning.allocation", self.allocation, ALLOCATIONS)
        if self.allocation != "uniform" and self.scope != "layer":
            raise ConfigError(f"pruning.allocation={self.allocation} sets a target per layer; "
                              "pruning.scope=global ranks all layers together instead: use "
                              "one or the other")
        if self.scope == "global" and getattr(CRITERIA[self.criterion], "per_row", False):
            raise ConfigError(f"pruning.criterion={self.criterion} compares weights within each "
                              "output row; pruning.scope=global does not apply (use layer)")


@dataclass
class RandomConfig(UnstructuredConfig):
    """`random`: unstructured pruning of uniformly random weights, the baseline of any study."""

    method: str = "random"
    criterion: str = "random"  # fixed: random is the unstructured baseline

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.criterion != "random":
            raise ConfigError(f"pruning.method=random picks weights at random, so "
                              f"pruning.criterion={self.criterion} does not apply; for that "
                              f"criterion use pruning=unstructured "
                              f"pruning.criterion={self.criterion}")


@PRUNERS.register("none", DenseConfig)
def prune_none(model: nn.Module, cfg: PruningConfig, session: PruneSession) -> MaskSet:
    return MaskSet()


class LayerWise(PerLayerPattern):
    """The lowest round(target * numel) scores of the layer, or with `per_row` the lowest
    round(target * row length) of every output row (Wanda's comparison group)."""

    def __init__(self, per_row: bool = False) -> None:
        self.per_row = per_row

    def layer_mask(self, scores: torch.Tensor, target: float, pruned: torch.Tensor
                   ) -> torch.Tensor:
        s = no_revival(scores, pruned)
        if not self.per_row:
            return lowest_k_mask(s, round(target * scores.numel()))
        rows = s.reshape(s.shape[0], -1)  # (out, in * k...)
        k = round(target * rows.shape[1])
        keep = torch.ones_like(rows, dtype=torch.bool)
        if k > 0:
            keep.scatter_(1, rows.topk(k, dim=1, largest=False).indices, False)
        return keep.view_as(scores)


class GlobalThreshold:
    """One ranking across all layers; prunes round(sum_l target_l * numel_l) weights."""

    def masks(self, scores: dict[str, torch.Tensor], targets: dict[str, float], current: MaskSet,
              signed: bool) -> MaskSet:
        flat = []
        for name in targets:
            s = scores[name] if signed else scores[name].abs()
            if name in current.masks:
                s = no_revival(s, ~current.masks[name])
            flat.append(s.flatten())
        k = round(sum(t * scores[n].numel() for n, t in targets.items()))
        keep = lowest_k_mask(torch.cat(flat), k)
        masks, offset = {}, 0
        for name in targets:
            n = scores[name].numel()
            masks[name] = keep[offset : offset + n].view_as(scores[name])
            offset += n
        return MaskSet(masks)

    def finalize(self, model: nn.Module, masks: MaskSet, session: PruneSession) -> MaskSet:
        return masks


def magnitude_masks(layers: dict[str, nn.Module], sparsity: float, scope: str) -> MaskSet:
    """Lowest-|w| masks for `layers`, each to `sparsity` (layer) or with one threshold (global)."""
    scores = {n: m.weight.detach().abs() for n, m in layers.items()}
    pattern = LayerWise() if scope == "layer" else GlobalThreshold()
    return pattern.masks(scores, dict.fromkeys(layers, sparsity), MaskSet(), signed=False)


def _prune(model: nn.Module, cfg: UnstructuredConfig, session: PruneSession) -> MaskSet:
    if cfg.scope == "global":
        return prune_with(model, cfg, session, GlobalThreshold())
    return prune_with(model, cfg, session, LayerWise(
        per_row=getattr(CRITERIA[cfg.criterion], "per_row", False)))


PRUNERS.register("unstructured", UnstructuredConfig)(_prune)
PRUNERS.register("random", RandomConfig)(_prune)
