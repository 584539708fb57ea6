"""N:M semi-structured pruning: in every group of M consecutive weights along the input
dimension, keep the N with the highest scores (2:4 is what sparse tensor cores accelerate).

For Conv the input dimension is the input channel (weights viewed channels-last as
(out, kh, kw, in), the layout N:M kernels use). A layer whose input size is not a multiple of M
ends with a partial group, which also keeps at most N weights (so LeNet's 1-channel first conv
stays dense at 2:4). The target sparsity is 1 - N/M; `pruning.sparsity` may be left null or
must equal it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from compression.core import validation as v
from compression.core.errors import ConfigError
from compression.core.lazy import F, nn, torch
from compression.pruning.base import PRUNERS, MaskSet, PruneSession
from compression.pruning.schedules import MaskPruningConfig, PerLayerPattern, no_revival, prune_with


def nm_sparsity(n: int, m: int, sparsity: float | None) -> float:
    """Check n:m and return the sparsity it implies (1 - n/m); a given `sparsity` must match."""
    v.in_range("pruning.m", m, 2, None, integer=True)
    v.in_range("pruning.n", n, 1, m - 1, integer=True)
    implied = 1 - n / m
    if isinstance(sparsity, int | float) and abs(sparsity - implied) > 1e-9:
        raise ConfigError(f"pruning.sparsity={sparsity!r} does not match pruning.n:m={n}:{m} "
                          f"(sparsity 1 - n/m = {implied:g}); set pruning.n / pruning.m, or "
                          "pruning.sparsity=null")
    return implied if sparsity is None else sparsity


@dataclass
class NMConfig(MaskPruningConfig):
    method: str = "nm"
    sparsity: float | None = None  # implied: 1 - n/m; a different value is rejected
    FIELD_NOTES: ClassVar[dict[str, str]] = {
        "overrides": "per-layer sparsity k/m, e.g. {fc3: 0} keeps fc3 dense, {fc1: 0.75} is 1:4",
        "schedule": "only oneshot (an N:M pattern has no intermediate steps)",
    }
    n: int = 2
    m: int = 4

    def __post_init__(self) -> None:
        self.sparsity = nm_sparsity(self.n, self.m, self.sparsity)
        super().__post_init__()
        if self.schedule != "oneshot":
            raise ConfigError(f"pruning.schedule={self.schedule} is not available for nm "
                              "(an N:M pattern has no intermediate steps); use oneshot")
        for pattern, s in self.overrides.items():
            if abs(self.m * (1 - s) - round(self.m * (1 - s))) > 1e-9:
                raise ConfigError(f"pruning.overrides.{pattern}={s!r} is not k/{self.m} for an "
                                  f"integer k (with pruning.m={self.m})")


def groups_view(t: torch.Tensor, m: int, fill: float) -> torch.Tensor:
    """Weight-shaped `t` -> (rows, groups, m): input dim last, padded with `fill` to m."""
    rows = t.movedim(1, -1).reshape(-1, t.shape[1])
    return F.pad(rows, (0, -rows.shape[1] % m), value=fill).view(rows.shape[0], -1, m)


def ungroup(g: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Inverse of `groups_view` (padding cropped)."""
    moved = (shape[0], *shape[2:], shape[1])
    rows = g.reshape(g.shape[0], -1)[:, : shape[1]]
    return rows.reshape(moved).movedim(-1, 1)


class NM(PerLayerPattern):
    def __init__(self, m: int) -> None:
        self.m = m

    def layer_mask(self, scores: torch.Tensor, target: float, pruned: torch.Tensor
                   ) -> torch.Tensor:
        n = round(self.m * (1 - target))
        groups = groups_view(no_revival(scores, pruned), self.m, float("-inf"))
        keep = torch.zeros_like(groups, dtype=torch.bool)
        keep.scatter_(-1, groups.topk(n, dim=-1).indices, True)
        return ungroup(keep, scores.shape)


@PRUNERS.register("nm", NMConfig)
def prune_nm(model: nn.Module, cfg: NMConfig, session: PruneSession) -> MaskSet:
    return prune_with(model, cfg, session, NM(cfg.m))
