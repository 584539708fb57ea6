"""Importance criteria: per-weight scores (higher = more important), shared by every pattern.

A pattern (unstructured, block, N:M, channels) aggregates these scores over its unit (a weight,
a block, a group, a channel) and removes the lowest units. Criteria:

- `magnitude`: |w| (a unit's L1 / L2 norm after aggregation);
- `random`: uniform noise - the baseline every pruning study needs;
- `taylor`: |w * g_b| accumulated over `score_batches` training batches b (first-order estimate
  of the loss change when w is removed, per batch: summing the gradients first would let a
  converged model's positive and negative batch gradients cancel, scoring whole output rows
  near zero);
- `movement`: -w * g accumulated over training steps (Sanh et al. 2020): weights moving towards
  zero score low. Scored first over a short training pass on a copy of the model, then updated
  after every fine-tuning step (so iterative / gradual schedules use the latest scores);
- `snip`: SNIP (Lee et al. 2019) - the model is re-initialized, scored with |w * g| at
  initialization (g summed over the batches, as the paper scores one batch), pruned, then
  trained from scratch (train.epochs at train.lr);
- `wanda` (pruning/wanda.py): |w| times its input feature's activation norm over calibration
  batches, compared within each output row.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Protocol

from compression.core.lazy import nn, torch
from compression.core.registry import Registry
from compression.pruning.base import PruneSession


class Criterion(Protocol):
    signed: bool  # scores may be negative: aggregate by sum, not by norm
    from_scratch: bool  # the model is re-initialized before scoring and trained from scratch
    per_row: bool  # scores compare within an output row only (unstructured: same k per row)

    def scores(self) -> dict[str, torch.Tensor]:
        """Current per-weight scores for each layer, shaped like its weight."""
        ...

    def observe(self) -> None:
        """Called after every fine-tuning optimizer step (gradients are still populated)."""
        ...


CriterionFactory = Callable[["nn.Module", dict[str, "nn.Module"], PruneSession, int], Criterion]
CRITERIA: Registry[CriterionFactory] = Registry("pruning.criterion")
register_criterion = CRITERIA.register


def score_batches(session: PruneSession, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    bs = session.rc.train.batch_size
    x, y = session.data.train_x, session.data.train_y
    return [(x[i : i + bs], y[i : i + bs]) for i in range(0, min(n * bs, len(y)), bs)]


def accumulated(model: nn.Module, layers: dict[str, nn.Module],
                batches: list[tuple[torch.Tensor, torch.Tensor]],
                per_batch: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
                ) -> dict[str, torch.Tensor]:
    """Sum over `batches` of per_batch(weight, d(loss)/d(weight) on that batch), in eval mode so
    BN running stats stay put."""
    was_training = model.training
    model.eval()
    acc = {n: torch.zeros_like(m.weight) for n, m in layers.items()}
    loss_fn = nn.CrossEntropyLoss()
    for x, y in batches:
        model.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        for n, m in layers.items():
            acc[n] += per_batch(m.weight.detach(), m.weight.grad)
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return acc


def summed_grads(model: nn.Module, layers: dict[str, nn.Module],
                 batches: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """d(loss)/d(weight) summed over `batches`."""
    return accumulated(model, layers, batches, lambda w, g: g)


class _Stateless:
    signed = False
    from_scratch = False
    per_row = False

    def __init__(self, model: nn.Module, layers: dict[str, nn.Module], session: PruneSession,
                 n_batches: int) -> None:
        self.model, self.layers, self.session, self.n_batches = model, layers, session, n_batches

    def observe(self) -> None:
        return None


@register_criterion("magnitude")
class Magnitude(_Stateless):
    def scores(self) -> dict[str, torch.Tensor]:
        return {n: m.weight.detach().abs() for n, m in self.layers.items()}


@register_criterion("random")
class Random(_Stateless):
    def scores(self) -> dict[str, torch.Tensor]:
        # Drawn from torch's global generator, which the pipeline seeds with `seed`.
        return {n: torch.rand_like(m.weight, dtype=torch.float32) for n, m in self.layers.items()}


@register_criterion("taylor")
class Taylor(_Stateless):
    def scores(self) -> dict[str, torch.Tensor]:
        return accumulated(self.model, self.layers, score_batches(self.session, self.n_batches),
                           lambda w, g: (w * g).abs())


@register_criterion("snip")
class Snip(_Stateless):
    from_scratch = True

    def scores(self) -> dict[str, torch.Tensor]:
        grads = summed_grads(self.model, self.layers, score_batches(self.session, self.n_batches))
        return {n: (m.weight.detach() * grads[n]).abs() for n, m in self.layers.items()}


@register_criterion("movement")
class Movement(_Stateless):
    signed = True

    def __init__(self, model: nn.Module, layers: dict[str, nn.Module], session: PruneSession,
                 n_batches: int) -> None:
        super().__init__(model, layers, session, n_batches)
        self.acc = self._scoring_pass()

    def _scoring_pass(self) -> dict[str, torch.Tensor]:
        """-w * g summed over a short training pass on a copy (the model itself is untouched)."""
        twin = copy.deepcopy(self.model).train()
        twin_layers = {n: twin.get_submodule(n) for n in self.layers}
        opt = torch.optim.Adam(twin.parameters(), lr=self.session.rc.finetune.lr)
        acc = {n: torch.zeros_like(m.weight) for n, m in self.layers.items()}
        loss_fn = nn.CrossEntropyLoss()
        for x, y in score_batches(self.session, self.n_batches):
            opt.zero_grad(set_to_none=True)
            loss_fn(twin(x), y).backward()
            for n, m in twin_layers.items():
                acc[n] -= m.weight.detach() * m.weight.grad
            opt.step()
        return acc

    def observe(self) -> None:
        for n, m in self.layers.items():
            if m.weight.grad is not None:
                self.acc[n] -= m.weight.detach() * m.weight.grad

    def scores(self) -> dict[str, torch.Tensor]:
        return {n: s.clone() for n, s in self.acc.items()}


def reinitialize_(model: nn.Module, seed: int) -> None:
    """Fresh random weights (and BN statistics) for pruning at initialization."""
    torch.manual_seed(seed)
    for m in model.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
