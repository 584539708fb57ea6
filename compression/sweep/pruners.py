"""Multi-fidelity trial pruning: Optuna pruners by name (`hydra.sweeper.pruner=<name>`), and the
job-side reporter that tells a trial its validation accuracy after every fine-tuning epoch.

Hydra's own Optuna sweeper has no pruners because its jobs cannot reach their trial. Ours can:
the sweep process puts the storage URL and the pruner's settings in the environment (inherited
by the basic launcher's jobs and by joblib workers; never written to Hydra's saved configs, so a
password in the URL stays out of files), and each job gets its study name and trial number from
its `hydra.job.env_set`. The job reports to the trial in the shared storage and stops itself
with `TrialPruned`; the sweep then tells the study PRUNED and the MLflow run ends KILLED with tag
`trial_state=PRUNED`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from compression.core import job, private_api
from compression.core.errors import ConfigError, TrialPruned
from compression.core.registry import Registry

if TYPE_CHECKING:  # Optuna is imported only where a sweep prunes (every run imports this)
    import optuna
    from optuna.pruners import BasePruner

log = logging.getLogger(__name__)

PrunerFactory = Callable[[dict[str, Any]], "BasePruner"]
# Optuna pruners stop trials early (not pruning methods: those are compression.pruning.PRUNERS)
TRIAL_PRUNERS: Registry[PrunerFactory] = Registry("hydra.sweeper.pruner")
# Optuna class name and the defaults we add: sized for fine-tuning runs of a few epochs (the
# median pruner judges from the second epoch on, once 4 trials have finished).
_CLASSES: dict[str, tuple[str, dict[str, Any]]] = {
    "none": ("NopPruner", {}),
    "median": ("MedianPruner", {"n_startup_trials": 4, "n_warmup_steps": 1}),
    "successive_halving": ("SuccessiveHalvingPruner", {}),
    "hyperband": ("HyperbandPruner", {}),
}


def _factory(cls_name: str, defaults: dict[str, Any]) -> PrunerFactory:
    def make(kwargs: dict[str, Any]) -> BasePruner:
        import optuna

        return getattr(optuna.pruners, cls_name)(**{**defaults, **kwargs})

    return make


for _name, (_cls, _defaults) in _CLASSES.items():
    TRIAL_PRUNERS.register(_name, dict)(_factory(_cls, _defaults))

REPORTED = "val_accuracy"  # the intermediate value: what fine-tuning can measure per epoch


def make_pruner(name: str, kwargs: Mapping[str, Any] | None = None) -> BasePruner:
    try:
        return TRIAL_PRUNERS.get(name).handler(dict(kwargs or {}))
    except TypeError as e:  # an argument the pruner does not take
        raise ConfigError(f"hydra.sweeper.pruner_kwargs={dict(kwargs or {})} for pruner "
                          f"{name}: {e}") from None


def check(name: str, objectives: list[str], directions: list[str]) -> None:
    """A pruner judges one intermediate value per step: the job reports val_accuracy, so the
    study must maximize val_accuracy alone (Optuna pruners do not take several objectives)."""
    if name == "none":
        return
    if objectives != [REPORTED] or directions != ["maximize"]:
        raise ConfigError(f"hydra.sweeper.pruner={name} needs objectives=[{REPORTED}] with "
                          f"directions=[maximize] (the value reported per epoch); got "
                          f"objectives={objectives} directions={directions}")


def export_settings(storage: str, name: str, kwargs: Mapping[str, Any] | None) -> None:
    """Put what jobs need to report into this process's environment (set before workers
    start, so forked and fresh joblib workers inherit it)."""
    job.set_pruner(storage, None if name == "none" else name, kwargs)


class TrialReporter:
    """The job's handle on its Optuna trial: `report(value, step)` raises TrialPruned when the
    study's pruner says the trial cannot catch up."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial

    @classmethod
    def of(cls, ctx: job.JobContext) -> TrialReporter | None:
        """None unless this job is a trial of a sweep that prunes."""
        if ctx.trial is None or ctx.optuna_pruner is None or ctx.optuna_storage is None:
            return None
        import optuna

        from compression.sweep.study import make_storage

        study_name, number = ctx.trial
        settings = ctx.optuna_pruner
        pruner = make_pruner(settings["name"], settings["kwargs"])
        study = optuna.load_study(study_name=study_name, storage=make_storage(ctx.optuna_storage),
                                  pruner=pruner)
        frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
        return cls(private_api.live_trial(study, frozen))

    def report(self, value: float, step: int) -> None:
        self.trial.report(value, step)
        if self.trial.should_prune():
            raise TrialPruned(f"pruned after fine-tuning epoch {step}: {REPORTED} {value:.4f} "
                              f"(trial {self.trial.number})", step=step, value=value)
