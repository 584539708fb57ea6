"""Block pruning: zero whole 2-D blocks of each layer's weight matrix (Conv weights viewed as
(out, in * kh * kw)), those with the lowest score norm."""

from __future__ import annotations

from dataclasses import dataclass, field

from compression.core import validation as v
from compression.core.errors import ConfigError
from compression.core.lazy import F, nn, torch
from compression.pruning.base import PRUNERS, MaskSet, PruneSession
from compression.pruning.schedules import (
    MaskPruningConfig,
    PerLayerPattern,
    lowest_k_mask,
    no_revival,
    prune_with,
)


@dataclass
class BlockConfig(MaskPruningConfig):
    method: str = "block"
    sparsity: float = 0.5  # fraction of blocks (~ weights) set to zero, in [0, 1)
    block: list[int] = field(default_factory=lambda: [4, 4])  # rows x columns, e.g. [1, 4]
    norm: str = "l1"  # block ranking: l1 (sum |score|) | l2

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.block, list | tuple) or len(self.block) != 2:
            raise ConfigError(f"pruning.block={self.block!r} must be [rows, columns], e.g. [4, 4]")
        for size in self.block:
            v.in_range("pruning.block", size, 1, None, integer=True)
        self.block = list(self.block)
        v.one_of("pruning.norm", self.norm, ["l1", "l2"])


def block_view(matrix: torch.Tensor, bh: int, bw: int) -> torch.Tensor:
    """(R, C) zero-padded to block multiples -> (R / bh, C / bw, bh * bw)."""
    r, c = matrix.shape
    padded = F.pad(matrix, (0, -c % bw, 0, -r % bh))
    rows, cols = padded.shape[0] // bh, padded.shape[1] // bw
    return padded.view(rows, bh, cols, bw).permute(0, 2, 1, 3).reshape(rows, cols, bh * bw)


def expand_blocks(keep: torch.Tensor, bh: int, bw: int, shape: torch.Size) -> torch.Tensor:
    """(R / bh, C / bw) block mask -> element mask of the original weight `shape`."""
    full = keep.repeat_interleave(bh, 0).repeat_interleave(bw, 1)
    return full[: shape[0], : shape[1:].numel()].reshape(shape)


class Blocks(PerLayerPattern):
    def __init__(self, bh: int, bw: int, norm: str) -> None:
        self.bh, self.bw, self.norm = bh, bw, norm

    def layer_mask(self, scores: torch.Tensor, target: float, pruned: torch.Tensor
                   ) -> torch.Tensor:
        matrix = scores.reshape(scores.shape[0], -1)
        blocks = block_view(matrix, self.bh, self.bw)
        # Edge blocks are partial: rank by the norm per real element so they are not favoured.
        count = block_view(torch.ones_like(matrix), self.bh, self.bw).sum(-1)
        if self.norm == "l2" and not self.signed:
            unit = (blocks.square().sum(-1) / count).sqrt()
        else:  # l1 (scores are already |s|; signed scores such as movement sum as they are)
            unit = blocks.sum(-1) / count
        was_pruned = block_view(pruned.reshape(matrix.shape).float(), self.bh, self.bw).sum(-1) > 0
        keep = lowest_k_mask(no_revival(unit, was_pruned), round(target * unit.numel()))
        return expand_blocks(keep, self.bh, self.bw, scores.shape)


@PRUNERS.register("block", BlockConfig)
def prune_block(model: nn.Module, cfg: BlockConfig, session: PruneSession) -> MaskSet:
    return prune_with(model, cfg, session, Blocks(cfg.block[0], cfg.block[1], cfg.norm))
