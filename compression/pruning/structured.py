"""Structured pruning: remove whole output channels (Conv filters, Linear neurons), ranked by the
L1 or L2 norm of their scores, with everything coupled to them (see graph.py).

`physical: true` (default) makes the model smaller: the channels are sliced out of their
producers, BatchNorms and the next layers' inputs, so dense kernels run faster. `physical: false`
only masks them (producer rows and consumer columns zeroed, shapes unchanged: no speed-up),
labelled by the `structured_physical` metric. Either way the first fine-tuning runs on the masked
model and the removed model computes the same function as the masked one.

`round_to: m` rounds each group's number of KEPT channels up to a multiple of m (capped at the
group's size), like Torch-Pruning's `round_to`: SIMD conv/GEMM kernels work in blocks of 8 or 16
channels, so e.g. 60 kept channels can cost as much as 64. Rounding up removes at most the target,
never more.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from compression.artifact.transforms import register_transform
from compression.core import validation as v
from compression.core.errors import ConfigError
from compression.core.lazy import nn, torch
from compression.core.registry import Registry
from compression.pruning.base import (
    PRUNERS,
    MaskSet,
    PruneResult,
    PruneSession,
    layer_targets,
    register_check,
)
from compression.pruning.schedules import MaskPruningConfig, lowest_k_mask, no_revival, prune_with
from compression.pruning.surgery import (
    FOLD_KIND,
    KIND,
    apply_channel_record,
    apply_fold_record,
    channel_record,
)

if TYPE_CHECKING:
    from compression.pruning.graph import Group


@dataclass
class StructuredConfig(MaskPruningConfig):
    method: str = "structured"
    sparsity: float = 0.5  # fraction of channels removed in each group of coupled channels
    norm: str = "l1"  # channel ranking: l1 | l2 norm of the channel's weight scores
    physical: bool = True  # false: only mask the channels (same shapes, NO speed-up)
    round_to: int = 1  # kept channels per group rounded UP to a multiple (e.g. 8 for SIMD)
    FIELD_NOTES: ClassVar[dict[str, str]] = {
        "include": "the output layer's channels (classes) are never removed",
        "exclude": "an excluded layer keeps its output channels (and its coupled group)",
        "overrides": "per-layer fraction of channels, e.g. pruning.overrides={layer3.*:0.25}",
        "sparse_kernel": "with physical: false only: masked Linear rows >= sparse_kernel_min "
                         "run a CSR kernel",
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        v.one_of("pruning.norm", self.norm, ["l1", "l2"])
        v.in_range("pruning.round_to", self.round_to, 1, None, integer=True)
        if not isinstance(self.physical, bool):
            raise ConfigError(f"pruning.physical={self.physical!r} must be true or false")

    def removes_channels(self) -> bool:
        return True

    def no_zeros_because(self) -> str:
        return "removes whole channels (with pruning.physical=false it zeroes them)" \
            if self.physical is True else ""


def active_groups(groups: list[Group], targets: dict[str, float], physical: bool = True
                  ) -> list[int]:
    """Groups to prune: every producer selected (a coupled group takes all or nothing) and no
    frozen interface. Removing channels (`physical`) refuses a selected layer whose channels
    reach an unsupported op; masking them is safe anywhere (only its own weights are zeroed)."""
    active = []
    for i, g in enumerate(groups):
        chosen = [p for p in g.producers if p in targets]
        if chosen and g.blocked and physical:
            raise ConfigError(
                f"pruning.method=structured cannot prove removing channels of layer {chosen[0]!r}"
                f" safe: they reach {g.blocked}; exclude it (pruning.exclude=[{chosen[0]}]) or "
                "mask channels instead of removing them (pruning.physical=false)"
            )
        usable = g.removable if physical else g.maskable
        if chosen and usable and len(chosen) == len(g.producers):
            active.append(i)
    return active


def removed_count(channels: int, target: float, round_to: int = 1) -> int:
    """Channels to remove from a group of `channels` at fraction `target`: round(target * C),
    at least one channel kept, and the kept count rounded UP to a multiple of `round_to`."""
    k = min(round(target * channels), channels - 1)
    kept = min(channels, math.ceil((channels - k) / round_to) * round_to)
    return channels - kept


class Channels:
    """Pattern: per active group, drop the round(target * C) channels with the lowest norm (fewer
    when `round_to` rounds the kept count up).

    The masks zero everything a removed channel is made of, not only its producers' weight
    rows: their bias, its BatchNorms' weight, bias and running mean (so the norm emits exactly
    0, whatever its running variance became), its depthwise convs' rows and bias, and its
    consumers' columns. A masked channel then outputs exactly zero, and the masked model
    computes what the one with the channels removed does."""

    def __init__(self, groups: list[Group], active: list[int], norm: str, physical: bool,
                 shapes: dict[str, torch.Size], round_to: int = 1) -> None:
        self.groups, self.active, self.norm, self.physical = groups, active, norm, physical
        self.result = PruneResult()  # what finalize did: the transform and its metrics
        # shape of every parameter and buffer ("layer.weight", "bn.running_mean"), for masks
        self.shapes = shapes
        self.round_to = round_to

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
            k = removed_count(g.channels, min(targets[p] for p in g.producers), self.round_to)
            keep = lowest_k_mask(no_revival(unit, pruned), k)
            for p in g.producers:
                w = scores[p]
                narrow(p, keep.view(-1, *[1] * (w.dim() - 1)).expand_as(w))
                self._entries(narrow, f"{p}.bias", keep, 1, 0)
            for name, repeat, offset in g.norms:
                for param in ("weight", "bias", "running_mean"):
                    self._entries(narrow, f"{name}.{param}", keep, repeat, offset)
            for name, offset in g.depthwise:
                w_shape = self.shapes[f"{name}.weight"]
                rows = self._segment(keep, 1, offset, w_shape[0])
                narrow(name, rows.view(-1, *[1] * (len(w_shape) - 1)).expand(w_shape))
                self._entries(narrow, f"{name}.bias", keep, 1, offset)
            # A blocked group's consumers are not known for sure (channels reach an op the
            # graph walk does not follow): only its own members are masked.
            for name, repeat, offset in g.consumers if g.blocked is None else ():
                w_shape = self.shapes[f"{name}.weight"]
                cols = self._segment(keep, repeat, offset, w_shape[1])
                narrow(name, cols.view(1, -1, *[1] * (len(w_shape) - 2)).expand(w_shape))
        return MaskSet(out)

    @staticmethod
    def _segment(keep: torch.Tensor, repeat: int, offset: int, width: int) -> torch.Tensor:
        """A keep-mask over `width` indices: the group's channels at their place, all else kept
        (the other parts of a concatenation are other groups')."""
        full = torch.ones(width, dtype=torch.bool)
        full[offset : offset + keep.numel() * repeat] = keep.repeat_interleave(repeat)
        return full

    def _entries(self, narrow: Any, key: str, keep: torch.Tensor, repeat: int, offset: int
                 ) -> None:
        """Mask a 1-d parameter or buffer (bias, BatchNorm entries) if the module has it."""
        if key in self.shapes:
            narrow(key, self._segment(keep, repeat, offset, self.shapes[key][0]))

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
        # every hidden channel counts, pruned or not: blocked groups and groups a grouped conv
        # freezes too (only the model's own inputs and outputs are not hidden)
        hidden = [g for g in self.groups if not g.interface]
        removed = sum(self.groups[i].channels - len(k) for i, k in kept.items())
        metrics = self.result.metrics
        metrics["channels_removed_fraction"] = removed / max(1, sum(g.channels for g in hidden))
        metrics["structured_physical"] = float(self.physical)
        if not self.physical:
            metrics["param_reduction"] = 0.0  # masked: every parameter is kept
            return masks
        before = sum(p.numel() for p in model.parameters())
        record = channel_record(model, self.groups, kept)
        apply_channel_record(model, record)
        self.result.transforms.append(record)
        after = sum(p.numel() for p in model.parameters())
        metrics["param_reduction"] = 1 - after / before
        return MaskSet()  # nothing left to mask: the channels are gone


def _groups_for(model: nn.Module, cfg: StructuredConfig, example: torch.Tensor
                ) -> tuple[list[Group], list[int]]:
    from compression.pruning.graph import channel_groups  # torch.fx: on use

    groups = channel_groups(model, example)
    return groups, active_groups(groups, layer_targets(model, cfg), cfg.physical)


@dataclass(frozen=True)
class FamilyPruner:
    """Structured pruning for a model family the fx channel walk cannot prove safe but a module
    of its own can prune (transformer blocks: heads.py registers itself)."""

    recognises: Callable[[nn.Module], bool]
    prune: Callable[[nn.Module, Any, PruneSession], MaskSet]
    check: Callable[[nn.Module, Any, torch.Tensor], None]  # before training, one-line errors


FAMILY_PRUNERS: Registry[FamilyPruner] = Registry("pruning.method=structured (model family)")


def _family(model: nn.Module) -> FamilyPruner | None:
    return next((f for f in FAMILY_PRUNERS.values() if f.recognises(model)), None)


@register_check("structured")
def check_structured(model: nn.Module, cfg: StructuredConfig, example: torch.Tensor) -> None:
    family = _family(model)
    if family is not None:
        return family.check(model, cfg, example)
    _groups_for(model, cfg, example)
    return None


def _weight_shapes(model: nn.Module) -> dict[str, torch.Size]:
    """Shape of every parameter and buffer by its full name, for the masks."""
    return {n: t.shape for n, t in [*model.named_parameters(), *model.named_buffers()]}


@PRUNERS.register("structured", StructuredConfig,
                  metrics=("channels_removed_fraction", "param_reduction", "structured_physical"))
def prune_structured(model: nn.Module, cfg: StructuredConfig, session: PruneSession
                     ) -> MaskSet | PruneResult:
    family = _family(model)
    if family is not None:
        return family.prune(model, cfg, session)
    groups, active = _groups_for(model, cfg, session.data.spec.example_input(1))
    shapes = _weight_shapes(model)
    pattern = Channels(groups, active, cfg.norm, cfg.physical, shapes, cfg.round_to)
    producers = {p for i in active for p in groups[i].producers}
    layers = {n: model.get_submodule(n) for n in layer_targets(model, cfg) if n in producers}
    pattern.result.masks = prune_with(model, cfg, session, pattern, layers=layers)
    return pattern.result


register_transform(KIND, apply_channel_record)
register_transform(FOLD_KIND, apply_fold_record)


def remove_channels_(model: nn.Module, fraction: float, example: torch.Tensor,
                     norm: str = "l1", exclude: tuple[str, ...] = (), round_to: int = 1
                     ) -> dict[str, Any]:
    """One-shot magnitude channel removal without a run (benchmarks, notebooks): drops
    `fraction` of every removable group's channels in place; returns the transform record."""
    cfg = StructuredConfig(sparsity=fraction, norm=norm, exclude=list(exclude), round_to=round_to)
    groups, active = _groups_for(model, cfg, example)
    shapes = _weight_shapes(model)
    producers = [p for i in active for p in groups[i].producers]
    scores = {p: model.get_submodule(p).weight.detach().abs() for p in producers}
    pattern = Channels(groups, active, norm, True, shapes, round_to)
    masks = pattern.masks(scores, dict.fromkeys(producers, fraction), MaskSet(), signed=False)
    record = channel_record(model, groups, pattern.kept(masks))
    apply_channel_record(model, record)
    return record
