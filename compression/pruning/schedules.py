"""Schedules: when masks are computed and how fine-tuning interleaves with them.

- `oneshot`: prune to the target, fine-tune;
- `iterative`: `rounds` x (prune -> fine-tune `round_epochs`), the sparsity after round r being
  1 - (1 - s)^(r / rounds), so each round removes the same fraction of what is left;
- `gradual`: prune during fine-tuning with the cubic schedule of Zhu & Gupta (2017),
  s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n dt))^3, at t = t0 + k dt (k = 1..n), with t0 = 0,
  n = `gradual_steps` and n dt = `gradual_end` of the fine-tuning steps; the rest of the
  fine-tuning recovers at the final sparsity.

Masks only grow: a weight pruned in an earlier round stays pruned. Every schedule works with
every criterion and pattern; the pattern's `finalize` (e.g. physical channel removal) runs
before the last fine-tuning segment where there is one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from compression.core import validation as v
from compression.core.errors import ConfigError
from compression.core.lazy import nn, torch
from compression.core.registry import Registry
from compression.pruning.base import MaskSet, PruneSession, PruningConfig, layer_targets
from compression.pruning.criteria import CRITERIA, Criterion, reinitialize_

Level = Callable[[float], float]  # final per-layer target -> target at this point of the schedule


@dataclass
class MaskPruningConfig(PruningConfig):
    """Fields of the mask-based methods (unstructured, random, block, nm, structured)."""

    criterion: str = "magnitude"  # magnitude (|w|) | random | taylor (|w*grad|) | movement | snip
    schedule: str = "oneshot"  # oneshot | iterative (rounds x prune->finetune) | gradual (cubic)
    rounds: int = 3  # iterative: number of prune -> fine-tune rounds
    round_epochs: int | None = None  # iterative: fine-tuning epochs per round (null: finetune.*)
    gradual_steps: int = 10  # gradual: n, the number of mask updates
    gradual_end: float = 0.75  # gradual: share of fine-tuning steps by which s_f is reached
    initial_sparsity: float = 0.0  # gradual: s_i
    score_batches: int = 8  # taylor / movement / snip: training batches used for scoring

    def __post_init__(self) -> None:
        super().__post_init__()
        v.one_of("pruning.criterion", self.criterion, sorted(CRITERIA))
        v.one_of("pruning.schedule", self.schedule, SCHEDULES)
        v.in_range("pruning.rounds", self.rounds, 1, None, integer=True)
        if self.round_epochs is not None:
            v.in_range("pruning.round_epochs", self.round_epochs, 0, None, integer=True)
        v.in_range("pruning.gradual_steps", self.gradual_steps, 1, None, integer=True)
        v.in_range("pruning.gradual_end", self.gradual_end, 0, 1, lo_open=True)
        v.in_range("pruning.initial_sparsity", self.initial_sparsity, 0, self.sparsity)
        v.in_range("pruning.score_batches", self.score_batches, 1, None, integer=True)
        if CRITERIA[self.criterion].from_scratch and self.schedule != "oneshot":
            raise ConfigError(f"pruning.criterion={self.criterion} prunes at initialization and "
                              f"needs pruning.schedule=oneshot, not {self.schedule}")


class Pattern(Protocol):
    """Turns per-weight scores into masks of one shape family (weights, blocks, N:M, channels)."""

    def masks(self, scores: dict[str, torch.Tensor], targets: dict[str, float], current: MaskSet,
              signed: bool) -> MaskSet:
        """Masks reaching `targets` (per layer) that never revive a weight `current` pruned."""
        ...

    def finalize(self, model: nn.Module, masks: MaskSet, session: PruneSession) -> MaskSet:
        """Last step before the final fine-tuning (e.g. remove masked channels); returns the
        masks still to keep applied."""
        ...


def lowest_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean keep-mask with exactly `k` False entries at the lowest scores."""
    keep = torch.ones(scores.numel(), dtype=torch.bool)
    if k > 0:
        keep[torch.topk(scores.flatten(), k, largest=False, sorted=False).indices] = False
    return keep.view_as(scores)


def no_revival(unit_scores: torch.Tensor, unit_pruned: torch.Tensor) -> torch.Tensor:
    """Scores with already-pruned units pushed to the bottom, so masks only ever grow."""
    return unit_scores.masked_fill(unit_pruned, float("-inf"))


@dataclass
class MaskPruner:
    model: nn.Module
    layers: dict[str, nn.Module]
    targets: dict[str, float]
    criterion: Criterion
    pattern: Pattern

    def masks_at(self, level: Level, current: MaskSet) -> MaskSet:
        scores = self.criterion.scores()
        targets = {n: level(t) for n, t in self.targets.items()}
        return self.pattern.masks(scores, targets, current, self.criterion.signed)

    def tracked(self, masks: MaskSet, plan: dict[int, Level] | None = None) -> ScheduledMasks:
        return ScheduledMasks(self, masks.masks, plan or {})


class ScheduledMasks(MaskSet):
    """Masks that, after every fine-tuning step, let the criterion observe the step (movement)
    and recompute themselves at the steps of a gradual plan."""

    def __init__(self, pruner: MaskPruner, masks: dict[str, torch.Tensor],
                 plan: dict[int, Level]) -> None:
        super().__init__(masks)
        self.pruner, self.plan = pruner, plan

    def after_step(self, model: nn.Module) -> Callable[[int], None]:
        def hook(step: int) -> None:
            self.pruner.criterion.observe()
            if step in self.plan:
                self.masks = self.pruner.masks_at(self.plan[step], self).masks
            self.apply(model)

        return hook


def _epochs(cfg: MaskPruningConfig, pruner: MaskPruner, session: PruneSession) -> tuple[int, float]:
    if pruner.criterion.from_scratch:  # SNIP: the pruned network is trained from scratch
        return session.rc.train.epochs, session.rc.train.lr
    return session.rc.finetune.epochs, session.rc.finetune.lr


def oneshot(pruner: MaskPruner, cfg: MaskPruningConfig, session: PruneSession) -> MaskSet:
    masks = pruner.masks_at(lambda s: s, MaskSet())
    masks.apply(pruner.model)
    masks = pruner.pattern.finalize(pruner.model, masks, session)
    epochs, lr = _epochs(cfg, pruner, session)
    session.finetune(pruner.model, masks, epochs=epochs, lr=lr)  # no later update to track
    return masks


def iterative(pruner: MaskPruner, cfg: MaskPruningConfig, session: PruneSession) -> MaskSet:
    masks = MaskSet()
    for r in range(1, cfg.rounds + 1):
        masks = pruner.masks_at(lambda s, r=r: 1 - (1 - s) ** (r / cfg.rounds), masks)
        masks.apply(pruner.model)
        if r == cfg.rounds:  # last round: no later update, so the criterion stops observing
            masks = pruner.pattern.finalize(pruner.model, masks, session)
            session.finetune(pruner.model, masks, epochs=cfg.round_epochs)
        else:
            session.finetune(pruner.model, pruner.tracked(masks), epochs=cfg.round_epochs)
    return masks


def cubic_plan(cfg: MaskPruningConfig, total_steps: int) -> dict[int, Level]:
    """Step -> level for k = 1..n at t = k dt (t0 = 0); the last one is the final target."""
    n = cfg.gradual_steps
    dt = max(1, int(cfg.gradual_end * total_steps) // n)
    s_i = cfg.initial_sparsity
    return {
        k * dt: (lambda s_f, k=k: s_f + (min(s_i, s_f) - s_f) * (1 - k / n) ** 3)
        for k in range(1, n + 1)
    }


def gradual(pruner: MaskPruner, cfg: MaskPruningConfig, session: PruneSession) -> MaskSet:
    epochs = session.rc.finetune.epochs
    if epochs <= 0:
        raise ConfigError("pruning.schedule=gradual prunes during fine-tuning; set "
                          "finetune.epochs > 0")
    steps = epochs * -(-len(session.data.train_y) // session.rc.train.batch_size)
    masks = MaskSet()
    if cfg.initial_sparsity > 0:  # t0: start at s_i
        masks = pruner.masks_at(lambda s_f: min(cfg.initial_sparsity, s_f), masks)
        masks.apply(pruner.model)
    tracked = pruner.tracked(masks, cubic_plan(cfg, steps))
    session.finetune(pruner.model, tracked, epochs=epochs)
    # Masks were applied after the last step, so the model holds the final zeros.
    return pruner.pattern.finalize(pruner.model, MaskSet(tracked.masks), session)


Schedule = Callable[[MaskPruner, MaskPruningConfig, PruneSession], MaskSet]
SCHEDULES: Registry[Schedule] = Registry("pruning.schedule")
SCHEDULES.add("oneshot", oneshot)
SCHEDULES.add("iterative", iterative)
SCHEDULES.add("gradual", gradual)


def prune_with(model: nn.Module, cfg: MaskPruningConfig, session: PruneSession,
               pattern: Pattern, layers: dict[str, nn.Module] | None = None) -> MaskSet:
    """Run `cfg.schedule` with `cfg.criterion` and `pattern` on the selected layers."""
    targets = layer_targets(model, cfg)
    if layers is None:
        layers = {n: model.get_submodule(n) for n in targets}
    factory = CRITERIA[cfg.criterion]
    if getattr(factory, "from_scratch", False):
        reinitialize_(model, session.rc.seed)
    criterion = factory(model, layers, session, cfg.score_batches)
    pruner = MaskPruner(model, layers, targets, criterion, pattern)
    masks = SCHEDULES[cfg.schedule](pruner, cfg, session)
    return MaskSet(masks.masks)  # plain masks: later stages (QAT) must not keep rescheduling


class PerLayerPattern:
    """A pattern deciding each layer on its own: subclasses implement `layer_mask`."""

    def masks(self, scores: dict[str, torch.Tensor], targets: dict[str, float], current: MaskSet,
              signed: bool) -> MaskSet:
        self.signed = signed
        out = {}
        for name, target in targets.items():
            s = scores[name] if signed else scores[name].abs()
            pruned = ~current.masks[name] if name in current.masks else torch.zeros_like(
                s, dtype=torch.bool)
            out[name] = self.layer_mask(s, target, pruned) & ~pruned
        return MaskSet(out)

    def layer_mask(self, scores: torch.Tensor, target: float, pruned: torch.Tensor
                   ) -> torch.Tensor:
        raise NotImplementedError

    def finalize(self, model: nn.Module, masks: MaskSet, session: PruneSession) -> MaskSet:
        return masks
