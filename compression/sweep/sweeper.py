"""The sweep loop behind `hydra/sweeper=optuna` (the Hydra plugin in hydra_plugins/ delegates
here): ask a batch of trials, launch them as Hydra jobs, tell Optuna what they returned."""

from __future__ import annotations

import logging
import shlex
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.errors import HydraException
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.trial import Trial, TrialState

from compression import tracking
from compression.config.run import RUN_METRICS
from compression.core.errors import ConfigError, first_line
from compression.core.job import STUDY_TAG, TRIAL_TAG, JobContext, job_env
from compression.core.registry import build_dataclass
from compression.sweep import goals, mlflow_side, pruners, results, workers
from compression.sweep import study as st
from compression.sweep.config import SweeperConfig
from compression.sweep.outcomes import SweepFailedError, TrialOutcomes
from compression.sweep.space import SearchSpace
from compression.training import quality

log = logging.getLogger(__name__)

# Objectives that hold the run's quality metric whatever it is (quality.py); the runtimes'
# rt_accuracy stays top-1 (runtime/measure.py), so it keeps its direction
QUALITY_SLOTS = ("accuracy", "val_accuracy", "baseline_accuracy", "baseline_val_accuracy")

# Overrides that set up the search, not the winning run: left out of its reproducing command.
NOT_REPRODUCED = ("sweep=", "target.", "target=", "hydra.", "hydra/")


def _quote(text: str) -> str:
    """A Hydra override value that is always read back as this exact string."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


class OptunaSweep(TrialOutcomes):
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
        self.goal = goals.goal_of(config)  # a plain sweep, or sweep=autotune's target
        self.objectives = self.goal.configure(self.objectives, self.cfg)
        self.cfg.check_objectives(self.objectives, RUN_METRICS)
        self._orient(config)
        self.constraints = self.cfg.constraint_specs
        # The job returns the objectives, then the constraint metrics it does not already return.
        extra = [c.metric for c in self.constraints if c.metric not in self.objectives]
        self.returned = [*self.objectives, *dict.fromkeys(extra)]
        self.workers = workers.concurrent_jobs(config, self.cfg.n_jobs)
        # before any worker starts: they inherit it (and it stays out of Hydra's saved files)
        pruners.export_settings(st.resolve_storage(self.cfg.storage), self.cfg.pruner,
                                self.cfg.pruner_kwargs)
        if self.cfg.fork_workers and workers.uses_joblib(config):
            workers.fork_workers()

    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        space = SearchSpace.parse([*(f"{k}={v}" for k, v in self.cfg.params.items()),
                                   *arguments], self.cfg.when, parser)
        study = st.open_study(self.cfg)
        space.check_compatible(study.study_name, study.get_trials(deepcopy=False))
        st.note_fixed_overrides(study, space.fixed)
        n_trials = self._prepare(study, space)
        self.goal.first_trials(study, {p.key: p.distribution for p in space.params})
        parent = self._parent_run(study, space, n_trials)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        log.info("study %s (%s, storage %s): %d complete trial(s) of %d", study.study_name,
                 self.cfg.sampler, st.redact(st.resolve_storage(self.cfg.storage)),
                 st.counts(study).complete, n_trials)

        self.parent, self.lost_in_a_row, self.store_down = parent, 0, False
        self._reap(study, parent, first=True)  # a killed earlier run of this study
        self.space, started = space, time.monotonic()
        returns = []
        try:
            while not self.goal.stop_reason(study, started) and (
                    batch := self._ask(study, space, n_trials, parent)):
                try:
                    with st.heartbeat([t for t, _ in batch], self.cfg.heartbeat_interval):
                        jobs = self._launch(study, batch)
                except KeyboardInterrupt:  # Ctrl-C or SIGTERM (train.py): resumable, uncounted
                    self._lose(study, batch, "interrupted (Ctrl-C or SIGTERM)")
                    raise
                self.job_idx += len(batch)
                if jobs is None:  # a worker died: joblib returns no result of the whole batch
                    self._lose(study, batch, "its joblib worker process died")
                else:
                    for (trial, _), job in zip(batch, jobs, strict=True):
                        self._tell(study, trial, job)
                    returns.append(jobs)
                self._check_failures(study, n_trials)
                self._check_lost(study)
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
    def _orient(self, config: DictConfig) -> None:
        """The quality slots (`val_accuracy`, ...) hold the run's metric; `maximize` on one
        means "best quality", so for a lower-is-better metric (perplexity) it becomes
        `minimize` (and the reverse). The metric's own names (`val_perplexity`) are taken as
        written."""
        name = str(OmegaConf.select(config, "metric.name", default="") or "")
        if quality.higher_is_better(name):
            return
        flip = {"maximize": "minimize", "minimize": "maximize"}
        for i, objective in enumerate(self.objectives):
            if objective in QUALITY_SLOTS and i < len(self.cfg.directions):
                log.info("metric %s is lower-is-better: objective %s is %sd", name, objective,
                         flip[self.cfg.directions[i]])
                self.cfg.directions[i] = flip[self.cfg.directions[i]]

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
        """End trials of dead workers (completed from a FINISHED MLflow run, else failed and
        queued again) and end their RUNNING MLflow runs as KILLED."""
        self.store_down = False
        recover = self._recover if parent is not None else None
        stale = st.fail_stale_trials(study, self.cfg.grace_period, self.cfg.max_attempts,
                                     recover)
        if parent is not None and (stale or first):
            live = {t.number for t in study.get_trials(states=(TrialState.RUNNING,))}
            mlflow_side.end_stale_children(parent, study.study_name, live)

    def _ask(self, study: optuna.Study, space: SearchSpace, n_trials: int,
             parent: tracking.Run | None) -> list[tuple[Trial, list[str]]]:
        self._reap(study, parent)
        n = st.counts(study)
        size = min(self.cfg.n_jobs, n_trials - n.done - n.running)
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
        if size <= 0 and n.done < n_trials and n.running:
            log.info("the last %d trial(s) run in other workers; this one stops", n.running)
        return batch

    def _job_overrides(self, study: optuna.Study, trial: Trial) -> list[str]:
        # the parent per job: a fork-server worker's own environment is the server's, copied
        # before the study's parent was known
        env = job_env(workers=self.workers, parent_run_id=JobContext.current().parent_run_id,
                      tags={STUDY_TAG: study.study_name, TRIAL_TAG: trial.number})
        out = [f"++hydra.job.env_set.{k}={_quote(v)}" for k, v in env.items()]
        if self.returned != self.objectives:
            out.append(f"objectives=[{','.join(self.returned)}]")
        return out

    def _launch(self, study: optuna.Study, batch: list[tuple[Trial, list[str]]]
                ) -> Sequence[JobReturn] | None:
        """Run the batch as Hydra jobs. Each job validates its own config before any work (a
        rejected value is that trial's FAIL, see train.py); composing one here first would cost
        a second Hydra composition per trial in this (serial) process. None: a worker died,
        and with it the results of the whole batch."""
        try:
            return self.launcher.launch([o for _, o in batch], initial_job_idx=self.job_idx)
        except workers.lost_worker_errors() as e:  # the next batch gets fresh workers
            log.warning("a joblib worker died (%s)", first_line(e))
            return None
        except HydraException as e:  # overrides that do not compose: the space itself is wrong
            for trial, _ in batch:
                self._fail(study, trial, f"{type(e).__name__}: {e}")
            raise ConfigError(f"sweep overrides do not compose: {str(e).splitlines()[0]} (a "
                              "parameter that only exists for some choices needs "
                              "hydra.sweeper.when)") from None

    def _command(self, params: Mapping[str, Any]) -> str:
        """The `python train.py ...` line that reproduces a trial (secrets redacted; the sweep's
        own settings left out)."""
        words = [tracking.redact(o) for o in self.space.overrides_of(params)
                 if not o.lstrip("+~").startswith(NOT_REPRODUCED)]
        return "python train.py " + " ".join(shlex.quote(w) for w in words)

    def _finish(self, study: optuna.Study, sweep_dir: Path, parent: tracking.Run | None) -> None:
        if parent is not None:  # runs left RUNNING by jobs the store failed under
            live = {t.number for t in study.get_trials(states=(TrialState.RUNNING,))}
            try:
                mlflow_side.end_stale_children(parent, study.study_name, live)
            except Exception as e:  # still down: the next resume ends them
                log.warning("could not end stale MLflow runs: %s", first_line(e))
        best = results.best_trials(study)
        files = [
            results.write_yaml(study, best, self.objectives, sweep_dir / self.cfg.results_file),
            results.write_csv(results.pareto_rows(best, self.objectives), sweep_dir / "pareto.csv"),
        ]
        results.trials_table(study).to_csv(sweep_dir / "trials.csv", index=False)
        files.append(sweep_dir / "trials.csv")
        log.info(results.summary(study, best, self.objectives))
        files += self.goal.finish(study, sweep_dir, parent, self._command)
        log.info("results: %s", ", ".join(str(f) for f in files))
        if parent is not None:
            for f in files:
                parent.log_artifact(f, "study")
