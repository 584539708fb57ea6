"""Structured pruning of transformer blocks: whole attention heads and MLP hidden neurons,
physically removed (or only masked with `pruning.physical=false`).

torch.fx's channel walk (graph.py) cannot prove a transformer safe (Linear layers on (B, T, D)
tensors, reshapes into heads), so `pruning.method=structured` hands any model holding blocks
that name their own removable units (`compression.models.units.UnitBlock`) to this module;
nothing here knows a model. The built-in ViT / character-LM blocks (models/vit.py) declare:

- a head h of an `Attention`: rows h*d .. h*d+d-1 of q, k and v and the same columns of `out`
  (d = head_dim); removing it lowers `num_heads`;
- a hidden neuron j of an `MLP`: row j of fc1 (and its bias) and column j of fc2.

The residual stream (embedding width), shared by every block and LayerNorm, stays. A unit is
ranked by the L1 / L2 norm of its criterion scores over all four (two) matrices; each selected
module loses round(target * units) of them (at least one kept, `round_to` respected), where its
target is the smallest of its producers' (q, k, v / fc1). The removal is recorded as a "heads"
transform the artifact loader replays on a fresh model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from compression.artifact.transforms import register_transform
from compression.core.errors import ConfigError
from compression.core.lazy import nn, torch
from compression.models.units import UnitBlock
from compression.pruning.base import MaskSet, PruneResult, PruneSession, layer_targets
from compression.pruning.schedules import lowest_k_mask, no_revival, prune_with
from compression.pruning.structured import (
    FAMILY_PRUNERS,
    FamilyPruner,
    StructuredConfig,
    removed_count,
)

KIND = "heads"


@dataclass(frozen=True)
class Units:
    """One module's removable units: `count` units of `size` rows of each producer and the
    same columns of the consumer."""

    module: str
    producers: tuple[str, ...]
    consumer: str
    size: int
    count: int


def transformer_units(model: nn.Module) -> list[Units]:
    """Every UnitBlock of `model` with its units, as the block names them."""
    out = []
    for name, m in model.named_modules():
        if isinstance(m, UnitBlock) and m.unit_producers:
            pre = f"{name}." if name else ""
            rows = m.get_submodule(m.unit_producers[0]).out_features  # type: ignore[attr-defined]
            out.append(Units(name, tuple(pre + p for p in m.unit_producers),
                             pre + m.unit_consumer, m.unit_size, rows // m.unit_size))
    return out


def _per_unit(s: torch.Tensor, u: Units, rows: bool, norm: str, signed: bool) -> torch.Tensor:
    """Producer rows (count*size, in) or consumer columns (out, count*size) -> (count,)."""
    s = s.reshape(u.count, -1) if rows else s.reshape(s.shape[0], u.count, u.size).transpose(
        0, 1).reshape(u.count, -1)
    if signed:
        return s.sum(1)
    return s.abs().sum(1) if norm == "l1" else s.square().sum(1).sqrt()


class HeadsAndNeurons:
    """Pattern: per active module, mask (then remove) its lowest-ranked heads or neurons."""

    def __init__(self, units: list[Units], cfg: StructuredConfig) -> None:
        self.units, self.cfg = units, cfg
        self.result = PruneResult()  # what finalize did: the transform and its metrics

    def masks(self, scores: dict[str, torch.Tensor], targets: dict[str, float], current: MaskSet,
              signed: bool) -> MaskSet:
        out: dict[str, torch.Tensor] = {}
        for u in self.units:
            rank = sum(_per_unit(scores[p], u, True, self.cfg.norm, signed) for p in u.producers)
            rank = rank + _per_unit(scores[u.consumer], u, False, self.cfg.norm, signed)
            first = u.producers[0]
            pruned = (~current.masks[first].reshape(u.count, -1).any(1) if first in current.masks
                      else torch.zeros(u.count, dtype=torch.bool))
            k = removed_count(u.count, min(targets[p] for p in u.producers), self.cfg.round_to)
            keep = lowest_k_mask(no_revival(rank, pruned), k).repeat_interleave(u.size)
            for p in u.producers:
                out[p] = keep.view(-1, 1).expand(scores[p].shape).clone()
            # the consumer is always scored (prune_heads passes it among the layers)
            out[u.consumer] = keep.view(1, -1).expand(scores[u.consumer].shape).clone()
        return MaskSet(out)

    def kept(self, masks: MaskSet) -> dict[str, list[int]]:
        """Module -> indices of its units still present."""
        return {u.module: masks.masks[u.producers[0]].reshape(u.count, -1).any(1).nonzero()
                .flatten().tolist() for u in self.units}

    def finalize(self, model: nn.Module, masks: MaskSet, session: PruneSession) -> MaskSet:
        kept = self.kept(masks)
        total = sum(u.count for u in self.units)
        metrics = self.result.metrics
        metrics["channels_removed_fraction"] = 1 - sum(map(len, kept.values())) / max(1, total)
        metrics["structured_physical"] = float(self.cfg.physical)
        if not self.cfg.physical:
            metrics["param_reduction"] = 0.0
            return masks
        before = sum(p.numel() for p in model.parameters())
        record = {"kind": KIND, "units": kept}
        apply_heads_record(model, record)
        self.result.transforms.append(record)
        metrics["param_reduction"] = 1 - sum(p.numel() for p in model.parameters()) / before
        return MaskSet()  # the units are gone: nothing left to mask


def _slice(layer: nn.Linear, idx: torch.Tensor, dim: int) -> None:
    w = layer.weight
    layer.weight = nn.Parameter(w.detach().index_select(dim, idx).clone(),
                                requires_grad=w.requires_grad)
    if dim == 0 and layer.bias is not None:
        layer.bias = nn.Parameter(layer.bias.detach().index_select(0, idx).clone(),
                                  requires_grad=layer.bias.requires_grad)
    if dim == 0:
        layer.out_features = len(idx)
    else:
        layer.in_features = len(idx)


def apply_heads_record(model: nn.Module, record: dict[str, Any]) -> nn.Module:
    """Slice every module of the record to its kept heads / neurons, in place."""
    for name, kept in record["units"].items():
        m = model.get_submodule(name)
        if not isinstance(m, UnitBlock):  # the loader only ever meets modules this file recorded
            raise ValueError(f"heads transform: {name!r} is {type(m).__name__}, not a block "
                             "that names its units (compression.models.units.UnitBlock)")
        size = m.unit_size
        idx = (torch.tensor(kept, dtype=torch.long).view(-1, 1) * size
               + torch.arange(size)).flatten()
        for p in m.unit_producers:
            _slice(m.get_submodule(p), idx, 0)  # type: ignore[attr-defined]
        _slice(m.get_submodule(m.unit_consumer), idx, 1)  # type: ignore[attr-defined]
        m.units_kept(len(kept))
    return model


def _active(model: nn.Module, cfg: StructuredConfig) -> list[Units]:
    """Modules whose producers (q, k, v / fc1) are all selected."""
    targets = layer_targets(model, cfg)
    return [u for u in transformer_units(model) if all(p in targets for p in u.producers)]


def prune_heads(model: nn.Module, cfg: StructuredConfig, session: PruneSession) -> PruneResult:
    units = _active(model, cfg)
    names = [n for u in units for n in (*u.producers, u.consumer)]
    layers = {n: model.get_submodule(n) for n in names}
    pattern = HeadsAndNeurons(units, cfg)
    pattern.result.masks = prune_with(model, cfg, session, pattern, layers=layers)
    return pattern.result


def _check(model: nn.Module, cfg: StructuredConfig, example: torch.Tensor) -> None:
    if not _active(model, cfg):
        raise ConfigError("pruning.method=structured removes attention heads and MLP neurons of "
                          "this transformer; the layer selection leaves none (select q, k, v or "
                          "fc1 layers, e.g. pruning.include=['*'])")


FAMILY_PRUNERS.add("transformer_heads",
                   FamilyPruner(lambda model: bool(transformer_units(model)), prune_heads, _check))
register_transform(KIND, apply_heads_record)
