"""How the sweep tells Optuna each trial's outcome: values (and constraints) of a completed
job, FAIL of a refused configuration, PRUNED of a job its pruner stopped, and a lost trial
(dead worker, store outage) failed and queued again uncounted, or completed from its FINISHED
MLflow run. Also when too many failures stop the sweep. A mixin of the sweeper (OptunaSweep),
whose state it shares: the parent run, objectives, constraints and the lost-in-a-row count."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import optuna
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException
from optuna.trial import FrozenTrial, Trial, TrialState

from compression import tracking
from compression.core import private_api
from compression.core.errors import TrialPruned, first_line
from compression.core.redaction import redact
from compression.sweep import failures, mlflow_side
from compression.sweep import study as st

if TYPE_CHECKING:
    from compression.sweep.config import SweeperConfig

log = logging.getLogger("compression.sweep.sweeper")  # one logger name for the sweep's lines

# Stop once this many batches' worth of trials in a row were lost to the infrastructure.
LOST_IN_A_ROW = 3


class SweepFailedError(HydraException):
    """More trials failed than hydra.sweeper.max_failure_rate allows."""



class TrialOutcomes:
    cfg: SweeperConfig
    parent: tracking.Run | None
    objectives: list[str]
    returned: list[str]
    constraints: list[Any]
    lost_in_a_row: int
    store_down: bool

    def _recover(self, study: optuna.Study, trial: FrozenTrial | Trial) -> bool:
        """Complete `trial` from its FINISHED MLflow run, if it has one (its job got that far
        before the sweep lost track of it). Idempotence: a resume neither runs such a trial
        again nor leaves a second FINISHED run of it."""
        if self.parent is None or self.store_down:
            return False
        try:
            values = mlflow_side.finished_values(self.parent, study.study_name, trial.number,
                                                 self.returned)
        except Exception as e:  # the store is down: the trial is run again instead
            log.warning("could not look up trial %d's MLflow run: %s", trial.number,
                        first_line(e))
            self.store_down = True  # each call waits out MLflow's retries: no more this batch
            return False
        if values is None:
            return False
        live = trial if isinstance(trial, Trial) else private_api.live_trial(study, trial)
        self._tell_values(study, live, values)
        return True

    def _lose(self, study: optuna.Study, batch: list[tuple[Trial, list[str]]], reason: str
              ) -> None:
        """The batch's jobs ended without results (a dead worker, an interrupt): a trial whose
        run FINISHED is completed from it; the others' runs end KILLED, the trials FAIL and are
        queued again, not counted against max_failure_rate."""
        log.warning("%d trial(s) lost: %s", len(batch), reason)
        self.store_down = False
        for trial, _ in batch:
            if self._recover(study, trial):
                log.info("trial %d: completed from its FINISHED MLflow run", trial.number)
                continue
            if self.parent is not None and not self.store_down:
                try:
                    mlflow_side.end_trial_runs(self.parent, study.study_name, trial.number,
                                               reason)
                except Exception as e:  # ended KILLED by the stale-run sweep on resume
                    log.warning("could not end trial %d's MLflow run: %s", trial.number,
                                first_line(e))
                    self.store_down = True
            self._fail_lost(study, trial, reason)

    def _fail_lost(self, study: optuna.Study, trial: Trial, reason: str) -> None:
        ft = st.fail_infra(study, trial, reason, self.cfg.max_attempts)
        self.lost_in_a_row = 0 if st.ERROR_ATTR in ft.user_attrs else self.lost_in_a_row + 1

    def _check_lost(self, study: optuna.Study) -> None:
        """Stop when the infrastructure keeps failing (every trial lost to the store or to
        dead workers): the trials are queued, nothing is counted, a resume goes on."""
        limit = LOST_IN_A_ROW * self.cfg.n_jobs
        if self.lost_in_a_row >= limit:
            last = max(study.get_trials(deepcopy=False, states=(TrialState.FAIL,)),
                       key=lambda t: t.number)
            raise SweepFailedError(
                f"study {study.study_name}: {self.lost_in_a_row} trial(s) in a row failed for "
                f"no fault of their configuration (last: {last.user_attrs.get(st.INFRA_ATTR)}); "
                "they are queued again and not counted against max_failure_rate: run the same "
                "command again to resume once the tracking store / workers are back")

    def _fail(self, study: optuna.Study, trial: Trial, error: str) -> None:
        trial.set_user_attr(st.ERROR_ATTR, redact(error)[:2000])  # the journal is a file
        study.tell(trial, state=TrialState.FAIL)
        log.warning("trial %d failed: %s", trial.number, error.splitlines()[0][:300])

    def _tell(self, study: optuna.Study, trial: Trial, job: JobReturn) -> None:
        if job.status != JobStatus.COMPLETED:
            e = private_api.job_error(job)
            if isinstance(e, TrialPruned):  # the job's own report was pruned: not a failure
                study.tell(trial, state=TrialState.PRUNED)
                log.info("trial %d %s", trial.number, str(e).split(" (trial")[0])
                self.lost_in_a_row = 0
                return
            if failures.is_infrastructure(e):  # the store, not the configuration, failed
                self._fail_lost(study, trial, f"{type(e).__name__}: {first_line(e)}")
            else:
                self._fail(study, trial, f"{type(e).__name__}: {e}")
                self.lost_in_a_row = 0
            return
        try:
            values = self._values(job.return_value)
        except ValueError as e:
            self._fail(study, trial, f"bad return value: {e}")
            self.lost_in_a_row = 0
            return
        self._tell_values(study, trial, values)

    def _tell_values(self, study: optuna.Study, trial: Trial, values: dict[str, float]) -> None:
        self.lost_in_a_row = 0
        constraint_values = {}
        for c in self.constraints:
            constraint_values.update(c.values(values[c.metric]))
        for name, value in constraint_values.items():
            trial.set_constraint(name, value)
        if constraint_values:
            trial.set_user_attr("constraints", constraint_values)
        study.tell(trial, [values[m] for m in self.objectives])

    def _values(self, returned: Any) -> dict[str, float]:
        if isinstance(returned, Mapping):
            missing = [m for m in self.returned if m not in returned]
            if missing:
                raise ValueError(f"the job's result has no {missing[0]!r}")
            return {m: float(returned[m]) for m in self.returned}
        seq = list(returned) if isinstance(returned, Sequence) else [returned]
        if len(seq) != len(self.returned):
            raise ValueError(f"the job returned {len(seq)} value(s) for {self.returned}")
        return {m: float(x) for m, x in zip(self.returned, seq, strict=True)}

    def _check_failures(self, study: optuna.Study, n_trials: int) -> None:
        failed = st.counts(study).failed
        if failed > self.cfg.max_failure_rate * n_trials:
            last = max((t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
                        if st.ERROR_ATTR in t.user_attrs), key=lambda t: t.number)
            error = last.user_attrs[st.ERROR_ATTR].splitlines()[0][:300]
            raise SweepFailedError(
                f"study {study.study_name}: {failed} failed trial(s) exceed "
                f"max_failure_rate={self.cfg.max_failure_rate} x n_trials={n_trials} (raise it "
                f"to go on); last error, trial {last.number}: {error} (every error: the "
                "trials' user attr 'error', and the MLflow runs of trials that started)")
