"""The sweeper's settings (`hydra.sweeper.*`), validated on construction with one-line errors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from compression.core import validation as v
from compression.core.errors import ConfigError
from compression.sweep.pruners import TRIAL_PRUNERS, make_pruner
from compression.sweep.pruners import check as check_pruner
from compression.sweep.samplers import SAMPLERS

DIRECTIONS = ("minimize", "maximize")


@dataclass(frozen=True)
class Constraint:
    """`metric <= max` and/or `metric >= min`; told to Optuna as values that must be <= 0."""

    metric: str
    max: float | None = None
    min: float | None = None

    @classmethod
    def parse(cls, metric: str, raw: Any) -> Constraint:
        """`0.01` (an upper bound) or `{max: 0.01}` / `{min: 0.9}` / both."""
        key = f"hydra.sweeper.constraints.{metric}"
        if isinstance(raw, Mapping):
            unknown = sorted(set(raw) - {"min", "max"})
            if unknown or not raw:
                raise ConfigError(f"{key}={dict(raw)!r}: use a number (upper bound) or "
                                  "{max: x} / {min: x}")
            bounds = {k: v.number(f"{key}.{k}", raw[k]) for k in raw}
            return cls(metric, bounds.get("max"), bounds.get("min"))
        return cls(metric, max=v.number(key, raw))

    def values(self, metric_value: float) -> dict[str, float]:
        """Optuna constraint values (feasible when <= 0), named for Trial.set_constraint."""
        out = {}
        if self.max is not None:
            out[f"{self.metric}<={self.max:g}"] = metric_value - self.max
        if self.min is not None:
            out[f"{self.metric}>={self.min:g}"] = self.min - metric_value
        return out


@dataclass
class SweeperConfig:
    sampler: str = "tpe"
    seed: int | None = None
    sampler_kwargs: dict[str, Any] = field(default_factory=dict)  # passed to the sampler
    directions: list[str] = field(default_factory=lambda: ["maximize"])
    constraints: dict[str, Any] = field(default_factory=dict)  # metric -> bound (see Constraint)
    n_trials: int | None = 20  # COMPLETE trials the study should hold; null: grid size
    n_jobs: int = 1  # trials per batch handed to the launcher (parallel with joblib)
    max_failure_rate: float = 0.25  # stop once failed trials > rate * n_trials
    # tries of one trial that fail for no fault of its configuration (a dead worker, the
    # tracking store down, an interrupt): queued again and not counted until this many
    max_attempts: int = 3
    storage: str | None = None  # null: journal file outputs/optuna.journal at the project root
    study_name: str | None = None  # null: a new study each time; set it to resume or share
    params: dict[str, str] = field(default_factory=dict)  # key -> Hydra sweep override
    when: dict[str, dict[str, Any]] = field(default_factory=dict)  # conditional parameters
    heartbeat_interval: float = 30.0  # seconds between "still alive" marks on running trials
    grace_period: float = 120.0  # a running trial without a mark for this long is stale
    results_file: str = "optimization_results.yaml"  # in hydra.sweep.dir
    fork_workers: bool = True  # joblib workers forked from the sweep (see sweep/workers.py)
    pruner: str = "none"  # stop hopeless trials after a fine-tuning epoch (sweep/pruners.py)
    pruner_kwargs: dict[str, Any] = field(default_factory=dict)  # passed to the pruner

    def __post_init__(self) -> None:
        for name in ("sampler_kwargs", "constraints", "params", "when", "pruner_kwargs"):
            value = getattr(self, name)
            if value is None:  # YAML null: what conf/ sets, so the CLI can assign a mapping
                setattr(self, name, {})
            elif not isinstance(value, Mapping):
                raise ConfigError(f"hydra.sweeper.{name}={value!r} must be a mapping, e.g. "
                                  f"hydra.sweeper.{name}={{key: value}}")
        SAMPLERS.get(self.sampler)  # unknown names: one line listing the known ones
        TRIAL_PRUNERS.get(self.pruner)
        make_pruner(self.pruner, self.pruner_kwargs)  # bad arguments fail here, in one line
        if self.seed is not None:
            v.number("hydra.sweeper.seed", self.seed, integer=True)
        if isinstance(self.directions, str):
            self.directions = [self.directions]
        if not self.directions:
            raise ConfigError("hydra.sweeper.directions is empty; e.g. [maximize]")
        for d in self.directions:
            v.one_of("hydra.sweeper.directions", d, DIRECTIONS)
        if self.n_trials is not None:
            v.in_range("hydra.sweeper.n_trials", self.n_trials, 1, integer=True)
        elif self.sampler != "grid":
            raise ConfigError("hydra.sweeper.n_trials=null is only allowed with sampler=grid")
        v.in_range("hydra.sweeper.n_jobs", self.n_jobs, 1, integer=True)
        v.in_range("hydra.sweeper.max_failure_rate", self.max_failure_rate, 0, 1)
        v.in_range("hydra.sweeper.max_attempts", self.max_attempts, 1, integer=True)
        v.one_of("hydra.sweeper.fork_workers", self.fork_workers, [True, False])
        v.in_range("hydra.sweeper.heartbeat_interval", self.heartbeat_interval, 0, lo_open=True)
        v.in_range("hydra.sweeper.grace_period", self.grace_period, self.heartbeat_interval,
                   lo_open=True)
        if self.study_name is not None and not str(self.study_name).strip():
            raise ConfigError("hydra.sweeper.study_name must be a non-empty name or null")
        self.constraint_specs  # noqa: B018  (parse now: errors before any training)

    @property
    def constraint_specs(self) -> list[Constraint]:
        return [Constraint.parse(m, raw) for m, raw in (self.constraints or {}).items()]

    def check_objectives(self, objectives: list[str], metrics: tuple[str, ...]) -> None:
        """The job's `objectives` must match `directions`; constraint metrics must exist."""
        if len(objectives) != len(self.directions):
            raise ConfigError(
                f"objectives={objectives} has {len(objectives)} metric(s) but "
                f"hydra.sweeper.directions={self.directions} has {len(self.directions)}"
            )
        for name in [*objectives, *(c.metric for c in self.constraint_specs)]:
            v.one_of("objectives / hydra.sweeper.constraints", name, metrics)
        check_pruner(self.pruner, objectives, list(self.directions))
