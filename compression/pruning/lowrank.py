"""Low-rank factorization: replace a Linear (out, in) by Linear(in, r) -> Linear(r, out), and a
Conv (out, in, kh, kw) by Conv(in, r, kh, kw) -> 1x1 Conv(r, out), from the truncated SVD of the
weight viewed as (out, in * kh * kw). Params and FLOPs fall by r * (out + in) / (out * in).

`pruning.sparsity` is what is dropped: with `rank_by: ratio` the fraction of each layer's rank
(r = ceil((1 - s) * min(out, in*k*k))); with `rank_by: energy` the fraction of its spectral
energy (r = the smallest rank keeping 1 - s of sum(sigma^2)). A layer whose factors would not be
smaller than it is left alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from compression.artifact.transforms import register_transform
from compression.core import validation as v
from compression.core.errors import ConfigError
from compression.core.lazy import nn, no_grad, torch
from compression.pruning.base import (
    PRUNERS,
    MaskSet,
    PruneResult,
    PruneSession,
    PruningConfig,
    layer_targets,
    register_check,
)

KIND = "lowrank"


@dataclass
class LowRankConfig(PruningConfig):
    method: str = "lowrank"
    sparsity: float = 0.5  # what is dropped: the fraction of each layer's rank (ratio) or energy
    rank_by: str = "ratio"  # ratio: drop `sparsity` of the rank; energy: of sum(sigma^2)
    FIELD_NOTES: ClassVar[dict[str, str]] = {
        "overrides": "per-layer values, e.g. pruning.overrides={fc3:0}"}

    def __post_init__(self) -> None:
        super().__post_init__()
        v.one_of("pruning.rank_by", self.rank_by, ["ratio", "energy"])

    def no_zeros_because(self) -> str:
        return "factorizes layers into smaller dense ones"


def choose_rank(sigma: torch.Tensor, drop: float, rank_by: str) -> int:
    """Kept rank for singular values `sigma` (descending) when dropping `drop`."""
    if rank_by == "ratio":
        return max(1, math.ceil((1 - drop) * len(sigma)))
    energy = torch.cumsum(sigma.double() ** 2, 0) / (sigma.double() ** 2).sum()
    return int(torch.searchsorted(energy, torch.tensor(1 - drop, dtype=torch.float64))) + 1


def _pair(m: nn.Module, rank: int) -> tuple[nn.Module, nn.Module]:
    """Untrained first/second factor modules with the right shapes."""
    if isinstance(m, nn.Linear):
        return nn.Linear(m.in_features, rank, bias=False), nn.Linear(rank, m.out_features,
                                                                      bias=m.bias is not None)
    conv = type(m)
    first = conv(m.in_channels, rank, m.kernel_size, stride=m.stride, padding=m.padding,
                 dilation=m.dilation, bias=False, padding_mode=m.padding_mode)
    return first, conv(rank, m.out_channels, 1, bias=m.bias is not None)


@no_grad
def factorize(m: nn.Module, rank: int) -> nn.Sequential:
    """Two layers whose product is the rank-`rank` truncated SVD of `m`'s weight."""
    w = m.weight.detach().reshape(m.weight.shape[0], -1)  # (out, in * k...)
    u, s, vh = torch.linalg.svd(w, full_matrices=False)  # (out, R), (R,), (R, in * k...)
    root = s[:rank].sqrt()
    first, second = _pair(m, rank)
    first.weight.copy_((root[:, None] * vh[:rank]).reshape(first.weight.shape))
    second.weight.copy_((u[:, :rank] * root).reshape(second.weight.shape))
    if m.bias is not None:
        second.bias.copy_(m.bias)
    return nn.Sequential(first, second)


def apply_lowrank_record(model: nn.Module, record: dict[str, Any]) -> nn.Module:
    """Loader transform: factorized shells (weights are loaded afterwards)."""
    for name, rank in record["layers"].items():
        model.set_submodule(name, nn.Sequential(*_pair(model.get_submodule(name), rank)))
    return model


register_transform(KIND, apply_lowrank_record)


@register_check("lowrank")
def check_lowrank(model: nn.Module, cfg: PruningConfig, example: torch.Tensor) -> None:
    for name in layer_targets(model, cfg):
        m = model.get_submodule(name)
        if getattr(m, "groups", 1) != 1:
            raise ConfigError(f"pruning.method=lowrank cannot factorize grouped conv {name!r} "
                              f"(groups={m.groups}); exclude it (pruning.exclude=[{name}])")


@PRUNERS.register("lowrank", LowRankConfig, metrics=("lowrank_layers", "param_reduction"))
def prune_lowrank(model: nn.Module, cfg: LowRankConfig, session: PruneSession) -> PruneResult:
    before = sum(p.numel() for p in model.parameters())
    ranks = {}
    for name, drop in layer_targets(model, cfg).items():
        m = model.get_submodule(name)
        out, fan_in = m.weight.shape[0], m.weight[0].numel()
        sigma = torch.linalg.svdvals(m.weight.detach().reshape(out, -1))
        rank = choose_rank(sigma, drop, cfg.rank_by)
        if rank * (out + fan_in) < out * fan_in:  # only when the factors are smaller
            ranks[name] = rank
            model.set_submodule(name, factorize(m, rank))
    reduction = 1 - sum(p.numel() for p in model.parameters()) / before
    session.finetune(model, MaskSet())
    return PruneResult(MaskSet(), [{"kind": KIND, "layers": ranks}],
                       {"lowrank_layers": float(len(ranks)), "param_reduction": reduction})
