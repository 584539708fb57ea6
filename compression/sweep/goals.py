"""What a sweep is after. The sweeper asks its goal at four points and has no branch of its own
for any kind of sweep: what to optimise (objectives, directions, constraints), the trials to
start from, whether to stop before n_trials / timeout, and what to write at the end.

`Objectives` is a plain sweep: the config's objectives, the sampler from the first trial, nothing
written besides the study's results. `sweep=autotune`'s target is the other goal
(`autotune.AutotuneGoal`); which one a sweep has is read from its config (`goal_of`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import optuna
    from omegaconf import DictConfig
    from optuna.distributions import BaseDistribution

    from compression.sweep.config import SweeperConfig
    from compression.tracking import Run

# params of a trial -> the `python train.py ...` line that reproduces it (the sweeper's, which
# knows the search space's overrides and what must not be repeated)
Reproduce = Callable[[Mapping[str, Any]], str]


class Goal(Protocol):
    def configure(self, objectives: list[str], cfg: SweeperConfig) -> list[str]:
        """The objectives the study optimises (`cfg`'s directions and constraints may be set
        here), given the config's."""
        ...

    def first_trials(self, study: optuna.Study, space: Mapping[str, BaseDistribution]) -> None:
        """Queue the trials to run before the sampler's (a new study only)."""
        ...

    def stop_reason(self, study: optuna.Study, started: float) -> str | None:
        """Why the sweep should stop now (before n_trials / timeout), or None to go on."""
        ...

    def finish(self, study: optuna.Study, sweep_dir: Path, parent: Run | None,
               reproduce: Reproduce) -> list[Path]:
        """Write and log what this goal adds to the results; returns the files (logged as
        artifacts of the parent run with the rest)."""
        ...


class Objectives:
    """A plain sweep: the objectives as configured, nothing before, beside or after them."""

    def configure(self, objectives: list[str], cfg: SweeperConfig) -> list[str]:
        return objectives

    def first_trials(self, study: optuna.Study, space: Mapping[str, BaseDistribution]) -> None:
        return None

    def stop_reason(self, study: optuna.Study, started: float) -> str | None:
        return None

    def finish(self, study: optuna.Study, sweep_dir: Path, parent: Run | None,
               reproduce: Reproduce) -> list[Path]:
        return []


def goal_of(config: DictConfig) -> Goal:
    """The sweep's goal: an autotune target where the config has a `target` section."""
    from omegaconf import OmegaConf

    from compression.sweep.autotune import AutotuneGoal, AutotuneTarget

    raw = OmegaConf.to_container(config.target, resolve=True) if "target" in config else None
    target = AutotuneTarget.from_settings(raw)
    return Objectives() if target is None else AutotuneGoal(target)
