"""Structured pruning: remove whole output channels (Conv filters, Linear neurons), ranked by the
L1 or L2 norm of their scores, with everything coupled to them (see graph.py).

`physical: true` (default) makes the model smaller: the channels are sliced out of their
producers, BatchNorms and the next layers' inputs, so dense kernels run faster. `physical: false`
only masks them (producer rows and consumer columns zeroed, shapes unchanged: no speed-up),
labelled by the `structured_physical` metric. Either way the first fine-tuning runs on the masked
model and the removed model computes the same function as the masked one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from compression import validation as v
from compression.errors import ConfigError
from compression.pruning.base import (
    PRUNERS,
    MaskSet,
    PruneSession,
    PruningConfig,
    layer_targets,
    register_check,
)
from compression.pruning.graph import Group, channel_groups
from compression.pruning.schedules import MaskPruningConfig, lowest_k_mask, no_revival, prune_with
from compression.pruning.surgery import KIND, apply_channel_record, channel_record
from compression.transforms import register_transform


@dataclass
class StructuredConfig(MaskPruningConfig):
    method: str = "structured"
    sparsity: float = 0.5  # fraction of each group's channels removed
    norm: str = "l1"  # channel ranking: l1 (sum |score|) or l2 over the channel's weights
    physical: bool = True  # false: mask the channels only (same shapes, no speed-up)

    def __post_init__(self) -> None:
        super().__post_init__()
        v.one_of("pruning.norm", self.norm, ["l1", "l2"])
        if not isinstance(self.physical, bool):
            raise ConfigError(f"pruning.physical={self.physical!r} must be true or false")


def active_groups(groups: list[Group], targets: dict[str, float]) -> list[int]:
    """Groups to prune: every producer selected (a coupled group takes all or nothing) and no
    frozen interface. Refuses a selected layer whose channels reach an unsupported op."""
    active = []
    for i, g in enumerate(groups):
        chosen = [p for p in g.producers if p in targets]
        if chosen and g.blocked:
            raise ConfigError(
                f"pruning.method=structured cannot prove removing channels of layer {chosen[0]!r}"
                f" safe: they reach {g.blocked}; exclude it (pruning.exclude=[...]) or use "
                "pruning.physical=false with it excluded"
            )
        if chosen and g.removable and len(chosen) == len(g.producers):
            active.append(i)
    return active


class Channels:
    """Pattern: per active group, drop the round(target * C) channels with the lowest norm."""

    def __init__(self, groups: list[Group], active: list[int], norm: str, physical: bool,
                 shapes: dict[str, torch.Size]) -> None:
        self.groups, self.active, self.norm, self.physical = groups, active, norm, physical
        self.shapes = shapes  # weight shape of every layer, for consumer masks

    def _unit(self, s: torch.Tensor, signed: bool) -> torch.Tensor:
        rows = s.reshape(s.shape[0], -1)  # (C, in * k...)
        if signed:
            return rows.sum(1)
        return rows.abs().sum(1) if self.norm == "l1" else rows.square().sum(1).sqrt()

    def masks(self, scores: dict[str, torch.Tensor], targets: dict[str, float], current: MaskSet,
              signed: bool) -> MaskSet:
        out: dict[str, torch.Tensor] = {}

        def narrow(name: str, mask: torch.Tensor) -> None:
            out[name] = out[name] & mask if name in out else mask

        for i in self.active:
            g = self.groups[i]
            unit = sum(self._unit(scores[p], signed) for p in g.producers)
            pruned = torch.zeros(g.channels, dtype=torch.bool)
            for p in g.producers:
                if p in current.masks:
                    pruned |= ~current.masks[p].reshape(g.channels, -1).any(1)
            k = min(round(min(targets[p] for p in g.producers) * g.channels), g.channels - 1)
            keep = lowest_k_mask(no_revival(unit, pruned), k)
            for p in g.producers:
                w = scores[p]
                narrow(p, keep.view(-1, *[1] * (w.dim() - 1)).expand_as(w))
            for name, repeat in g.consumers:
                shape = current.masks[name].shape if name in current.masks else None
                narrow(name, self._columns(keep.repeat_interleave(repeat), name, shape))
        return MaskSet(out)

    def _columns(self, keep: torch.Tensor, name: str, shape: torch.Size | None) -> torch.Tensor:
        """Consumer mask zeroing the input columns of removed channels: (out, in, *k)."""
        w_shape = shape if shape is not None else self.shapes[name]
        return keep.view(1, -1, *[1] * (len(w_shape) - 2)).expand(w_shape)

    def kept(self, masks: MaskSet) -> dict[int, list[int]]:
        """Active group -> indices of its channels still present in `masks`."""
        out = {}
        for i in self.active:
            g = self.groups[i]
            rows = masks.masks[g.producers[0]].reshape(g.channels, -1).any(1)
            out[i] = rows.nonzero().flatten().tolist()
        return out

    def finalize(self, model: nn.Module, masks: MaskSet, session: PruneSession) -> MaskSet:
        kept = self.kept(masks)
        hidden = [g for g in self.groups if g.frozen is None and g.blocked is None]
        removed = sum(self.groups[i].channels - len(k) for i, k in kept.items())
        session.extra_metrics["channels_removed_fraction"] = removed / max(
            1, sum(g.channels for g in hidden))
        session.extra_metrics["structured_physical"] = float(self.physical)
        if not self.physical:
            session.extra_metrics["param_reduction"] = 0.0  # masked: every parameter is kept
            return masks
        before = sum(p.numel() for p in model.parameters())
        record = channel_record(self.groups, kept)
        apply_channel_record(model, record)
        session.transforms.append(record)
        after = sum(p.numel() for p in model.parameters())
        session.extra_metrics["param_reduction"] = 1 - after / before
        return MaskSet()  # nothing left to mask: the channels are gone


def _groups_for(model: nn.Module, cfg: PruningConfig, example: torch.Tensor
                ) -> tuple[list[Group], list[int]]:
    groups = channel_groups(model, example)
    return groups, active_groups(groups, layer_targets(model, cfg))


@register_check("structured")
def check_structured(model: nn.Module, cfg: PruningConfig, example: torch.Tensor) -> None:
    _groups_for(model, cfg, example)


@PRUNERS.register("structured", StructuredConfig)
def prune_structured(model: nn.Module, cfg: StructuredConfig, session: PruneSession) -> MaskSet:
    groups, active = _groups_for(model, cfg, session.data.spec.example_input(1))
    shapes = {n: m.weight.shape for n, m in model.named_modules()
              if isinstance(getattr(m, "weight", None), torch.Tensor)}
    pattern = Channels(groups, active, cfg.norm, cfg.physical, shapes)
    producers = {p for i in active for p in groups[i].producers}
    layers = {n: model.get_submodule(n) for n in layer_targets(model, cfg) if n in producers}
    return prune_with(model, cfg, session, pattern, layers=layers)


register_transform(KIND, apply_channel_record)


def remove_channels_(model: nn.Module, fraction: float, example: torch.Tensor,
                     norm: str = "l1", exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """One-shot magnitude channel removal without a run (benchmarks, notebooks): drops
    `fraction` of every removable group's channels in place; returns the transform record."""
    cfg = StructuredConfig(sparsity=fraction, norm=norm, exclude=list(exclude))
    groups, active = _groups_for(model, cfg, example)
    shapes = {n: m.weight.shape for n, m in model.named_modules()
              if isinstance(getattr(m, "weight", None), torch.Tensor)}
    producers = [p for i in active for p in groups[i].producers]
    scores = {p: model.get_submodule(p).weight.detach().abs() for p in producers}
    pattern = Channels(groups, active, norm, True, shapes)
    masks = pattern.masks(scores, dict.fromkeys(producers, fraction), MaskSet(), signed=False)
    record = channel_record(groups, pattern.kept(masks))
    apply_channel_record(model, record)
    return record
