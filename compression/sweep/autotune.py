"""Accuracy-aware auto-compression (`sweep=autotune`): the smallest or fastest model whose
validation accuracy drop stays within `target.max_drop`, searched jointly over pruning method,
sparsity, per-layer allocation and quantization mode / bits.

The target becomes the study's single objective (`size` -> minimize size_bytes; `latency` ->
maximize the interleaved `speedup`, since raw latencies measured at different moments on a
shared machine do not compare; `rt_latency` -> maximize `rt_speedup` of the deployment runtime)
and an Optuna constraint on the validation drop (absolute, or relative to the baseline with
`target.relative=true`, as INC and NNCF default). The sweep ends when a feasible trial exists and
`patience` finished trials since brought no improvement, or when `n_trials` / `timeout` run out.
The winner is printed and logged with the exact command line that reproduces it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState

from compression.core import validation as v
from compression.core.errors import ConfigError
from compression.core.registry import build_dataclass

if TYPE_CHECKING:
    from compression.sweep.config import SweeperConfig
    from compression.sweep.goals import Reproduce
    from compression.tracking import Run

log = logging.getLogger(__name__)

# target.objective -> (metric the study optimizes, direction)
OBJECTIVES = {
    "size": ("size_bytes", "minimize"),
    "latency": ("speedup", "maximize"),
    "rt_latency": ("rt_speedup", "maximize"),
}
DROPS = {False: "val_accuracy_drop", True: "val_accuracy_drop_rel"}


@dataclass
class AutotuneTarget:
    max_drop: float = 0.01  # allowed validation accuracy drop (0.01 = 1 point, or 1% relative)
    relative: bool = False  # true: drop / baseline accuracy
    objective: str = "size"  # size | latency | rt_latency
    patience: int = 10  # finished trials without improvement that end the search
    timeout: float | None = None  # seconds; no new trials are started after it
    # Points tried first, before the sampler (the prior a person would start from): each maps
    # swept keys to values; keys a point leaves out (or that its choices switch off) are sampled.
    first_trials: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        v.in_range("target.max_drop", self.max_drop, 0, 1)
        v.one_of("target.relative", self.relative, [True, False])
        v.one_of("target.objective", self.objective, OBJECTIVES)
        v.in_range("target.patience", self.patience, 1, None, integer=True)
        if self.timeout is not None:
            v.in_range("target.timeout", self.timeout, 0, None, lo_open=True)
        if not isinstance(self.first_trials, list) or not all(
                isinstance(p, Mapping) for p in self.first_trials):
            raise ConfigError(f"target.first_trials={self.first_trials!r} must be a list of "
                              "mappings, e.g. [{pruning.sparsity: 0.9, quantization: lowbit}]")

    @classmethod
    def from_settings(cls, raw: Any) -> AutotuneTarget | None:
        """The `target` section of the composed config (None when there is none)."""
        if raw is None:
            return None
        if not isinstance(raw, Mapping):
            raise ConfigError(f"target={raw!r} must be a mapping, e.g. {{max_drop: 0.01}}")
        return build_dataclass(cls, dict(raw), "target")

    @property
    def metric(self) -> str:
        return OBJECTIVES[self.objective][0]

    @property
    def direction(self) -> str:
        return OBJECTIVES[self.objective][1]

    @property
    def drop_metric(self) -> str:
        return DROPS[self.relative]

    def constraints(self) -> dict[str, float]:
        return {self.drop_metric: self.max_drop}


def _fits(dist: BaseDistribution, value: Any) -> bool:
    if isinstance(dist, CategoricalDistribution):
        return value in dist.choices
    if isinstance(dist, FloatDistribution | IntDistribution):
        return isinstance(value, int | float) and dist.low <= value <= dist.high
    return False


def enqueue_first_trials(study: optuna.Study, target: AutotuneTarget,
                         space: Mapping[str, BaseDistribution]) -> int:
    """Queue the target's first trials in a new study (a resumed one already has its start).
    A point that does not fit the search space (a key not swept, a value outside its range:
    the space was narrowed) is skipped with a warning, not half-applied."""
    if study.get_trials(deepcopy=False):
        return 0
    queued = 0
    for point in target.first_trials:
        misfit = [k for k, x in point.items() if k not in space or not _fits(space[k], x)]
        if misfit:
            log.warning("target.first_trials: %s skipped: %s=%r is not in the search space",
                        dict(point), misfit[0], point[misfit[0]])
            continue
        study.enqueue_trial(dict(point), user_attrs={"queued_by": "target.first_trials"})
        queued += 1
    return queued


def feasible(t: FrozenTrial) -> bool:
    """A complete trial whose constraints (metric minus bound, as the sweep records them in the
    trial's user attr `constraints`) all hold."""
    values = t.user_attrs.get("constraints", {}).values()
    return t.state == TrialState.COMPLETE and all(c <= 0 for c in values)


def best(study: optuna.Study, target: AutotuneTarget) -> FrozenTrial | None:
    """The feasible trial with the best objective (ties: the earlier trial)."""
    sign = 1 if target.direction == "minimize" else -1
    pool = [t for t in study.get_trials(deepcopy=False) if feasible(t) and t.values]
    return min(pool, key=lambda t: (sign * t.values[0], t.number), default=None)


def stop_reason(study: optuna.Study, target: AutotuneTarget, started: float) -> str | None:
    """Why the search should stop now, or None to go on."""
    if target.timeout is not None and time.monotonic() - started >= target.timeout:
        return f"target.timeout={target.timeout:g} s reached"
    winner = best(study, target)
    if winner is None:
        return None
    done = (TrialState.COMPLETE, TrialState.PRUNED)
    since = sum(t.number > winner.number for t in study.get_trials(deepcopy=False, states=done))
    if since >= target.patience:
        return (f"target met by trial {winner.number}; {since} trial(s) since brought no "
                f"improvement (target.patience={target.patience})")
    return None


def describe(trial: FrozenTrial, target: AutotuneTarget) -> dict[str, Any]:
    """The winner as plain data (for the results file and the parent run's tags)."""
    value = trial.values[0]
    return {"trial": trial.number, target.metric: value if math.isfinite(value) else None,
            "params": dict(trial.params)}


class AutotuneGoal:
    """`sweep=autotune` as the sweep's goal (sweep/goals.py): the target sets the objective and
    the drop constraint, queues its first trials, stops on patience or target.timeout, and at
    the end names the winner with the command line that reproduces it (`autotune.yaml`, and
    the parent run's tags)."""

    def __init__(self, target: AutotuneTarget) -> None:
        self.target = target

    def configure(self, objectives: list[str], cfg: SweeperConfig) -> list[str]:
        cfg.directions = [self.target.direction]
        cfg.constraints = {**cfg.constraints, **self.target.constraints()}
        return [self.target.metric]

    def first_trials(self, study: optuna.Study, space: Mapping[str, BaseDistribution]) -> None:
        enqueue_first_trials(study, self.target, space)

    def stop_reason(self, study: optuna.Study, started: float) -> str | None:
        reason = stop_reason(study, self.target, started)
        if reason:
            log.info("autotune stops: %s", reason)
        return reason

    def finish(self, study: optuna.Study, sweep_dir: Path, parent: Run | None,
               reproduce: Reproduce) -> list[Path]:
        """Print and record the winner with the command line that reproduces it."""
        from omegaconf import OmegaConf

        target = self.target
        winner = best(study, target)
        info: dict[str, Any] = {"target": dataclasses.asdict(target), "winner": None,
                                "command": None}
        if winner is None:
            log.warning("autotune: no trial met %s <= %g", target.drop_metric, target.max_drop)
        else:
            info["winner"] = describe(winner, target)
            info["command"] = reproduce(winner.params)
            log.info("autotune winner: trial %d, %s=%g within %s <= %g; reproduce with:\n  %s",
                     winner.number, target.metric, winner.values[0], target.drop_metric,
                     target.max_drop, info["command"])
            if parent is not None:
                parent.set_tags({"autotune_winner_trial": str(winner.number),
                                 "autotune_command": info["command"]})
        path = sweep_dir / "autotune.yaml"
        OmegaConf.save(OmegaConf.create(info), path)
        return [path]
