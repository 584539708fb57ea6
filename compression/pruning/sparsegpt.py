"""`sparsegpt`: one-shot pruning with weight reconstruction (Frantar & Alistarh 2023,
"SparseGPT: Massive Language Models Can Be Accurately Pruned in One-Shot"; reference
github.com/IST-DASLab/sparsegpt sparsegpt.py).

Layer by layer, in registration order (for the built-in models, forward order), through the model
as already pruned so far: H = X X^T / rows of the layer's calibration inputs (plus `percdamp`
times its mean diagonal), its inverse's upper Cholesky factor U. Columns are processed in blocks
of `blocksize`; within a block, the mask is chosen per block (unstructured: the lowest
w^2 / U_jj^2 of the block, `sparsity` of them) or per group of M columns (N:M: keep the N highest),
and each pruned column's error is spread over the block's later columns (OBS update); the
block's accumulated error updates the remaining columns at once (lazy batch update).

N:M groups follow nm.py's layout: M consecutive input channels of one kernel position (a Conv's
columns are reordered channels-last for the solve), a partial last group keeping at most N.
Fine-tuning (finetune.epochs) follows with the masks applied.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from compression.core import validation as v
from compression.core.errors import ConfigError
from compression.core.lazy import nn, no_grad, torch
from compression.pruning.base import (
    PRUNERS,
    MaskSet,
    PruneSession,
    PruningConfig,
    layer_targets,
    register_check,
)
from compression.pruning.calibration import gram, shared_inputs, supported
from compression.pruning.nm import nm_sparsity


@dataclass
class SparseGPTConfig(PruningConfig):
    method: str = "sparsegpt"
    sparsity: float | None = 0.5  # pattern nm: null or 1 - n/m
    pattern: str = "unstructured"  # unstructured | nm
    n: int = 2  # nm: weights kept per group of m
    m: int = 4
    blocksize: int = 128  # columns per lazy-update block
    percdamp: float = 0.01  # dampening: this fraction of mean(diag H) added to the diagonal
    calibration_batches: int = 8  # training batches (train.batch_size each) for H

    def __post_init__(self) -> None:
        v.one_of("pruning.pattern", self.pattern, ["unstructured", "nm"])
        if self.pattern == "nm":
            self.sparsity = nm_sparsity(self.n, self.m, self.sparsity)
        elif self.sparsity is None:
            raise ConfigError("pruning.sparsity=null needs pruning.pattern=nm; give a fraction")
        super().__post_init__()
        v.in_range("pruning.blocksize", self.blocksize, 1, None, integer=True)
        v.in_range("pruning.percdamp", self.percdamp, 0, None, lo_open=True)
        v.in_range("pruning.calibration_batches", self.calibration_batches, 1, None,
                   integer=True)
        if self.pattern == "nm":
            for pattern, s in self.overrides.items():
                if abs(self.m * (1 - s) - round(self.m * (1 - s))) > 1e-9:
                    raise ConfigError(f"pruning.overrides.{pattern}={s!r} is not k/{self.m} for "
                                      f"an integer k (with pruning.m={self.m})")


@dataclass(frozen=True)
class Layout:
    """Columns of the (reordered) weight: `positions` runs of `channels` input channels."""

    channels: int
    positions: int = 1

    def group(self, col: int, m: int) -> int:
        """Size of the N:M group starting at `col`, or 0 if no group starts there."""
        c = col % self.channels
        return min(m, self.channels - c) if c % m == 0 else 0

    def block(self, blocksize: int, m: int) -> int:
        """A block size (near `blocksize`) whose boundaries never split an N:M group."""
        unit = m if self.channels % m == 0 else self.channels
        return max(unit, blocksize // unit * unit)


def _inverse_factor(h: torch.Tensor, percdamp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(upper Cholesky factor of (H + damp I)^-1, dead input columns) as in the reference."""
    h = h.clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    h += percdamp * torch.mean(torch.diag(h)) * torch.eye(h.shape[0], dtype=h.dtype)
    hinv = torch.cholesky_inverse(torch.linalg.cholesky(h))
    return torch.linalg.cholesky(hinv, upper=True), dead


@no_grad
def sparsegpt_solve(w: torch.Tensor, h: torch.Tensor, sparsity: float, layout: Layout,
                    nm: tuple[int, int] | None = None, blocksize: int = 128,
                    percdamp: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """Prune the (rows, cols) weight `w` given the inputs' H (cols, cols): returns the
    reconstructed weight (pruned entries exactly 0) and its keep-mask. `nm` = (n kept, m)."""
    u, dead = _inverse_factor(h.double(), percdamp)
    w = w.double().clone()
    w[:, dead] = 0
    _rows, cols = w.shape
    prune = torch.zeros_like(w, dtype=torch.bool)
    bs = layout.block(blocksize, nm[1]) if nm else blocksize
    for i1 in range(0, cols, bs):
        i2 = min(i1 + bs, cols)
        w1, u1 = w[:, i1:i2].clone(), u[i1:i2, i1:i2]
        err = torch.zeros_like(w1)
        p1 = torch.zeros_like(w1, dtype=torch.bool)  # this block's pruned entries
        if nm is None:
            score = w1.square() / torch.diag(u1).square()
            k = round(score.numel() * sparsity)
            if k:
                p1.view(-1)[score.flatten().topk(k, largest=False).indices] = True
        for i in range(i2 - i1):
            size = layout.group(i1 + i, nm[1]) if nm else 0
            drop = size - min(nm[0], size) if nm else 0
            if drop:
                score = w1[:, i : i + size].square() / torch.diag(u1)[i : i + size].square()
                p1.scatter_(1, i + score.topk(drop, dim=1, largest=False).indices, True)
            col, d = w1[:, i], u1[i, i]
            q = col.masked_fill(p1[:, i], 0)
            e = (col - q) / d
            w1[:, i:] -= e.unsqueeze(1) @ u1[i, i:].unsqueeze(0)  # OBS update within the block
            w1[:, i] = q
            err[:, i] = e
        w[:, i1:i2], prune[:, i1:i2] = w1, p1
        w[:, i2:] -= err @ u[i1:i2, i2:]  # lazy update of the remaining columns
    return w.masked_fill(prune, 0), ~prune


def _channels_last(m: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None, Layout]:
    """The weight as (out, cols) in N:M's column order and the column permutation applied."""
    w = m.weight.detach()
    if isinstance(m, nn.Linear):
        return w, None, Layout(w.shape[1])
    c, k = w.shape[1], math.prod(w.shape[2:])
    perm = torch.arange(c * k).view(c, k).T.flatten()  # (C, kh*kw) order -> (kh*kw, C)
    return w.flatten(1)[:, perm], perm, Layout(c, k)


@no_grad
def prune_layer_(m: nn.Module, h: torch.Tensor, target: float, cfg: SparseGPTConfig
                 ) -> torch.Tensor:
    """SparseGPT on one layer in place, given H of its inputs; returns the keep-mask,
    weight-shaped."""
    w, perm, layout = _channels_last(m)
    if perm is not None:
        h = h[perm][:, perm]
    nm = (round(cfg.m * (1 - target)), cfg.m) if cfg.pattern == "nm" else None
    new, keep = sparsegpt_solve(w, h, target, layout, nm, cfg.blocksize, cfg.percdamp)
    if perm is not None:
        inv = torch.argsort(perm)
        new, keep = new[:, inv], keep[:, inv]
    m.weight.copy_(new.view_as(m.weight).to(m.weight.dtype))
    return keep.view_as(m.weight)


@register_check("sparsegpt")
def check_sparsegpt(model: nn.Module, cfg: SparseGPTConfig, example: torch.Tensor) -> None:
    for name in layer_targets(model, cfg):
        m = model.get_submodule(name)
        ok = supported(m) and (isinstance(m, nn.Linear) or (
            m.groups == 1 and isinstance(m.padding, tuple)))
        if not ok:
            raise ConfigError(f"pruning.method=sparsegpt handles Linear and Conv2d (groups=1, "
                              f"numeric padding) layers; {name!r} is {type(m).__name__}: "
                              f"exclude it (pruning.exclude=[{name}])")


@PRUNERS.register("sparsegpt", SparseGPTConfig)
def prune_sparsegpt(model: nn.Module, cfg: SparseGPTConfig, session: PruneSession) -> MaskSet:
    batches = session.calibration_batches(cfg.calibration_batches)
    masks = MaskSet(sparsegpt_(model, layer_targets(model, cfg), cfg, batches))
    session.finetune(model, masks)
    return masks


def sparsegpt_(model: nn.Module, targets: dict[str, float], cfg: SparseGPTConfig,
               batches: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Prune every layer of `targets` in order, each from the inputs it gets through the
    model pruned so far (layers fed the same tensor share one H); returns the keep-masks."""
    layers = {n: model.get_submodule(n) for n in targets}
    masks = {}
    for run in shared_inputs(model, layers, batches[0]):
        h, count = gram(model, run[0], layers[run[0]], batches)
        for name in run:
            masks[name] = prune_layer_(layers[name], h / count, targets[name], cfg)
    return masks
