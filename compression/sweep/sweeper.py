"""The sweep loop behind `hydra/sweeper=optuna` (the Hydra plugin in hydra_plugins/ delegates
here): ask a batch of trials, launch them as Hydra jobs, tell Optuna what they returned."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.trial import Trial, TrialState

from compression import tracking
from compression.config import METRICS
from compression.errors import ConfigError
from compression.registry import build_dataclass
from compression.sweep import mlflow_side, results, workers
from compression.sweep import study as st
from compression.sweep.config import SweeperConfig
from compression.sweep.space import SearchSpace

log = logging.getLogger(__name__)


class SweepFailedError(HydraException):
    """More trials failed than hydra.sweeper.max_failure_rate allows."""


def _quote(text: str) -> str:
    """A Hydra override value that is always read back as this exact string."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def uses_joblib(config: DictConfig) -> bool:
    return "joblib" in str(config.hydra.launcher.get("_target_", ""))


def concurrent_jobs(config: DictConfig, n_jobs: int) -> int:
    """How many jobs run at once on this machine, to share its cores among them."""
    if not uses_joblib(config):
        return 1  # basic launcher: one after another; cluster launchers: one job per node
    limit = config.hydra.launcher.get("n_jobs", -1)
    limit = os.cpu_count() or 1 if not isinstance(limit, int) or limit < 1 else limit
    return max(1, min(n_jobs, limit))


class OptunaSweep:
    def __init__(self, settings: Mapping[str, Any]) -> None:
        # Hydra passes nested settings (params, when, ...) as DictConfig: make them plain.
        raw = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
               for k, v in settings.items() if k != "_target_"}
        self.cfg: SweeperConfig = build_dataclass(SweeperConfig, raw, "hydra.sweeper")
        self.job_idx = 0

    # -- Hydra's Sweeper interface -------------------------------------------------------------
    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher: Launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)
        objectives = config.get("objectives") or ["val_accuracy"]
        self.objectives = [objectives] if isinstance(objectives, str) else list(objectives)
        self.cfg.check_objectives(self.objectives, METRICS)
        self.constraints = self.cfg.constraint_specs
        # The job returns the objectives, then the constraint metrics it does not already return.
        extra = [c.metric for c in self.constraints if c.metric not in self.objectives]
        self.returned = [*self.objectives, *dict.fromkeys(extra)]
        self.workers = concurrent_jobs(config, self.cfg.n_jobs)
        if self.cfg.fork_workers and uses_joblib(config):
            workers.fork_workers()

    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        space = SearchSpace.parse([*(f"{k}={v}" for k, v in self.cfg.params.items()),
                                   *arguments], self.cfg.when, parser)
        study = st.open_study(self.cfg)
        space.check_compatible(study.study_name, study.get_trials(deepcopy=False))
        st.note_fixed_overrides(study, space.fixed)
        n_trials = self._prepare(study, space)
        parent = self._parent_run(study, space, n_trials)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        log.info("study %s (%s, storage %s): %d complete trial(s) of %d", study.study_name,
                 self.cfg.sampler, st.redact(st.resolve_storage(self.cfg.storage)),
                 st.counts(study).complete, n_trials)

        self._reap(study, parent, first=True)  # a killed earlier run of this study
        returns = []
        try:
            while batch := self._ask(study, space, n_trials, parent):
                with st.heartbeat([t for t, _ in batch], self.cfg.heartbeat_interval):
                    jobs = self._launch(study, batch)
                self.job_idx += len(batch)
                for (trial, _), job in zip(batch, jobs, strict=True):
                    self._tell(study, trial, job)
                returns.append(jobs)
                self._check_failures(study, n_trials)
            self._check_failures(study, n_trials)  # also counts configs rejected while asking
        except SweepFailedError:
            try:
                self._finish(study, sweep_dir, parent)  # the results so far, failures included
            except Exception as e:  # e.g. the MLflow store that made the trials fail
                log.warning("could not write or log the results so far: %s", e)
            raise
        self._finish(study, sweep_dir, parent)
        return returns

    # -- steps ---------------------------------------------------------------------------------
    def _prepare(self, study: optuna.Study, space: SearchSpace) -> int:
        """Grid: queue every point not in the study yet. Returns the number of trials to reach."""
        if self.cfg.sampler != "grid":
            assert self.cfg.n_trials is not None
            return self.cfg.n_trials
        points = space.grid()
        for point in points:
            study.enqueue_trial(point, user_attrs={st.QUEUED_ATTR: "grid"}, skip_if_exists=True)
        return min(self.cfg.n_trials or len(points), len(points))

    def _parent_run(self, study: optuna.Study, space: SearchSpace, n_trials: int
                    ) -> tracking.Run | None:
        tags = {
            "study_name": study.study_name, "sampler": self.cfg.sampler,
            "seed": str(self.cfg.seed), "search_space": space.describe(),
            "storage": st.redact(st.resolve_storage(self.cfg.storage)),
            "search_space_fixed": " ".join(space.fixed),
            "objectives": ",".join(self.objectives), "directions": ",".join(self.cfg.directions),
            "constraints": str(self.cfg.constraints), "n_trials": str(n_trials),
        }
        return mlflow_side.study_parent(self.hydra_context.callbacks.callbacks,
                                        study.study_name, tags)

    def _reap(self, study: optuna.Study, parent: tracking.Run | None, first: bool = False
              ) -> None:
        """Fail trials of dead workers (queued again) and end their MLflow runs as KILLED."""
        stale = st.fail_stale_trials(study, self.cfg.grace_period)
        if parent is not None and (stale or first):
            live = {t.number for t in study.get_trials(states=(TrialState.RUNNING,))}
            mlflow_side.end_stale_children(parent, study.study_name, live)

    def _ask(self, study: optuna.Study, space: SearchSpace, n_trials: int,
             parent: tracking.Run | None) -> list[tuple[Trial, list[str]]]:
        self._reap(study, parent)
        n = st.counts(study)
        size = min(self.cfg.n_jobs, n_trials - n.complete - n.running)
        if self.cfg.sampler == "grid":
            size = min(size, n.waiting)  # the grid is exhausted when its queue is empty
        batch: list[tuple[Trial, list[str]]] = []
        while len(batch) < size:
            if self.cfg.sampler == "grid" and not st.counts(study).waiting:
                break  # other workers took the last queued points
            trial = study.ask()
            st.claim(trial)
            overrides = space.suggest(trial)
            if st.cancel_if_surplus(study, trial, n_trials):
                break  # other workers asked for the last trials at the same moment
            batch.append((trial, [*overrides, *self._job_overrides(study, trial)]))
        if size <= 0 and n.complete < n_trials and n.running:
            log.info("the last %d trial(s) run in other workers; this one stops", n.running)
        return batch

    def _job_overrides(self, study: optuna.Study, trial: Trial) -> list[str]:
        env = "++hydra.job.env_set."
        out = [f"{env}{tracking.TAG_ENV_PREFIX}study_name={_quote(study.study_name)}",
               f"{env}{tracking.TAG_ENV_PREFIX}trial_number={trial.number}",
               f"{env}COMPRESSION_WORKERS={self.workers}"]
        parent = os.environ.get(tracking.PARENT_ENV)  # per job: a fork-server worker's own
        if parent:  # environment is the server's, copied before the study's parent was known
            out.append(f"{env}{tracking.PARENT_ENV}={parent}")
        if self.returned != self.objectives:
            out.append(f"objectives=[{','.join(self.returned)}]")
        return out

    def _launch(self, study: optuna.Study, batch: list[tuple[Trial, list[str]]]
                ) -> Sequence[JobReturn]:
        """Run the batch as Hydra jobs. Each job validates its own config before any work (a
        rejected value is that trial's FAIL, see train.py); composing one here first would cost
        a second Hydra composition per trial in this (serial) process."""
        try:
            return self.launcher.launch([o for _, o in batch], initial_job_idx=self.job_idx)
        except HydraException as e:  # overrides that do not compose: the space itself is wrong
            for trial, _ in batch:
                self._fail(study, trial, f"{type(e).__name__}: {e}")
            raise ConfigError(f"sweep overrides do not compose: {str(e).splitlines()[0]} (a "
                              "parameter that only exists for some choices needs "
                              "hydra.sweeper.when)") from None

    def _fail(self, study: optuna.Study, trial: Trial, error: str) -> None:
        trial.set_user_attr(st.ERROR_ATTR, error[:2000])
        study.tell(trial, state=TrialState.FAIL)
        log.warning("trial %d failed: %s", trial.number, error.splitlines()[0][:300])

    def _tell(self, study: optuna.Study, trial: Trial, job: JobReturn) -> None:
        if job.status != JobStatus.COMPLETED:
            e = job._return_value
            self._fail(study, trial, f"{type(e).__name__}: {e}")
            return
        try:
            values = self._values(job.return_value)
        except ValueError as e:
            self._fail(study, trial, f"bad return value: {e}")
            return
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

    def _finish(self, study: optuna.Study, sweep_dir: Path, parent: tracking.Run | None) -> None:
        best = results.best_trials(study)
        files = [
            results.write_yaml(study, best, self.objectives, sweep_dir / self.cfg.results_file),
            results.write_csv(results.pareto_rows(best, self.objectives), sweep_dir / "pareto.csv"),
        ]
        results.trials_table(study).to_csv(sweep_dir / "trials.csv", index=False)
        files.append(sweep_dir / "trials.csv")
        log.info(results.summary(study, best, self.objectives))
        log.info("results: %s", ", ".join(str(f) for f in files))
        if parent is not None:
            for f in files:
                parent.log_artifact(f, "study")
