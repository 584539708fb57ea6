"""The one place that reaches into Optuna's and Hydra's private APIs, and why each is needed.

Everything else uses public APIs only. Each function here names what it needs that the library
does not offer publicly (as of Optuna 5 and Hydra 1.3); when a release adds it, this module is
the only one to change. Imports are inside the functions: a single run never pays for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial


def live_trial(study: optuna.Study, frozen: FrozenTrial) -> optuna.Trial:
    """A writable handle on a RUNNING trial of `study` that another process asked for (a job
    reporting to its trial, a sweep completing a dead worker's trial). Optuna's public API
    hands out a `Trial` only from `study.ask()`, which makes a new trial; `Trial(study,
    trial_id)` is public but the storage id it needs is `FrozenTrial._trial_id` only."""
    import optuna

    return optuna.Trial(study, frozen._trial_id)


def set_user_attr_of(study: optuna.Study, frozen: FrozenTrial, key: str, value: Any) -> None:
    """Set a user attribute of a RUNNING trial known only as a FrozenTrial (another, dead
    process's): FrozenTrial.set_user_attr changes the local copy only."""
    live_trial(study, frozen).set_user_attr(key, value)


def split_sweep_arguments(overrides: list[Any]) -> list[list[str]]:
    """Every job of a basic-sweeper multirun (the cartesian product of the sweep overrides),
    each a list of override strings. Hydra computes it only inside its BasicSweeper, whose
    module is `hydra._internal`; we need it before any job starts, to check every job."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    return [list(job) for batch in BasicSweeper.split_arguments(overrides, None)
            for job in batch]


def job_error(job: Any) -> BaseException:
    """The exception a failed Hydra job raised. The public `JobReturn.return_value` re-raises
    it but first writes "Error executing job ..." to stderr, which the sweeper replaces with
    its own one-line log of the trial's failure."""
    error: BaseException = job._return_value
    return error
