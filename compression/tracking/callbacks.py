"""Hydra callbacks: one MLflow parent run per multirun, whatever sweeper or launcher runs it.

The parent's id reaches jobs through $COMPRESSION_PARENT_RUN_ID (inherited by launcher worker
processes, which start after `on_multirun_start`). Not $MLFLOW_RUN_ID: MLflow would take that as
"resume this run" and ignore the parent (mlflow #15713).
"""

from __future__ import annotations

import atexit
import logging
import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from compression import tracking
from compression.core import private_api
from compression.core.errors import ConfigError, first_line
from compression.core.job import JobContext, set_parent_run
from compression.core.redaction import redact
from compression.core.registry import build_dataclass

log = logging.getLogger(__name__)


class CheckSweepJobs(Callback):
    """Hydra's basic sweeper composes a job's config only when it launches it, so a bad value in
    job #5 would surface after jobs #0-4 trained and were recorded. This composes and checks
    every job first (pipeline.check: values, dataset, model support; about 0.1 s a job) and
    stops in one line before any job or MLflow run. Our Optuna sweeper's trials are each checked
    by their own job (a rejected one is told to the study as FAIL); what is common to all of
    them (the sweeper's settings and storage, objectives and constraints) is checked here, as
    Hydra opens the MLflow parent run right after this callback and builds the sweeper later."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        target = str(config.hydra.sweeper.get("_target_", ""))
        if "compression_sweeper" in target:
            return self._check_optuna_sweep(config)
        if not target.endswith(".BasicSweeper"):
            return
        from hydra.core.global_hydra import GlobalHydra
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from hydra.errors import HydraException

        from compression.core.errors import DatasetNotFoundError
        from compression.run import pipeline

        loader = GlobalHydra.instance().config_loader()
        params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
        parsed = OverridesParser.create(config_loader=loader).parse_overrides(
            [*params, *config.hydra.overrides.task])
        jobs = private_api.split_sweep_arguments(parsed)
        swept = {o.get_key_element() for o in parsed if o.is_sweep_override()}
        for number, job in enumerate(jobs):
            try:
                job_cfg = loader.load_sweep_config(config, list(job))
                # without `hydra`: parts of it resolve only inside a running job
                pipeline.check(OmegaConf.masked_copy(job_cfg, [k for k in job_cfg
                                                              if k != "hydra"]))
            except HydraException:
                return  # Hydra reports what does not compose itself, before any job
            except (ConfigError, DatasetNotFoundError) as e:
                # Hydra would turn an exception here into a warning and run the jobs anyway
                values = " ".join(o for o in job if o.split("=", 1)[0] in swept)
                print(redact(f"error: job #{number}{f' ({values})' if values else ''}: {e}"),
                      file=sys.stderr)
                sys.exit(2)
        log.debug("checked the configs of %d jobs", len(jobs))

    @staticmethod
    def _check_optuna_sweep(config: DictConfig) -> None:
        """What can be refused before the parent run opens: the sweeper's settings, a storage
        that cannot be opened, and objectives or constraints that the configured runs will not
        log (unless a swept key decides whether they do: then each trial checks its own)."""
        from hydra.core.global_hydra import GlobalHydra
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from hydra.errors import HydraException

        from compression.config.run import check_produced
        from compression.sweep import study as st
        from compression.sweep.config import SweeperConfig

        try:
            settings = OmegaConf.to_container(config.hydra.sweeper, resolve=True)
            assert isinstance(settings, dict)
            settings.pop("_target_", None)
            cfg = build_dataclass(SweeperConfig, settings, "hydra.sweeper")
            st.make_storage(cfg.storage)
            loader = GlobalHydra.instance().config_loader()
            parsed = OverridesParser.create(config_loader=loader).parse_overrides(
                [*(f"{k}={v}" for k, v in cfg.params.items()), *config.hydra.overrides.task])
            swept = [o.get_key_element().lstrip("+~") for o in parsed if o.is_sweep_override()]
            fixed = [o.input_line for o in parsed if not o.is_sweep_override() and o.input_line]
            job_cfg = loader.load_sweep_config(config, fixed)
            raw = OmegaConf.to_container(
                OmegaConf.masked_copy(job_cfg, [k for k in job_cfg if k != "hydra"]),
                resolve=True)
            assert isinstance(raw, dict)
            objectives = raw.get("objectives") or ["val_accuracy"]
            objectives = [objectives] if isinstance(objectives, str) else list(objectives)
            check_produced(objectives, raw, varying=swept)
            check_produced([c.metric for c in cfg.constraint_specs], raw,
                           key="hydra.sweeper.constraints", varying=swept)
        except HydraException:
            return  # the sweeper reports what does not compose, with its own message
        except ConfigError as e:
            print(f"error: {redact(e)}", file=sys.stderr)
            sys.exit(2)


def sweep_name(config: DictConfig, overrides: list[str]) -> str:
    """A parent run's name from what the multirun sweeps: the preset (sweep=<name>) and the
    swept keys, e.g. `demo: pruning.sparsity, quantization`. The Optuna sweeper renames its
    parent after the study (sweep.mlflow_side.study_parent)."""
    params = dict(OmegaConf.select(config, "hydra.sweeper.params", default=None) or {})
    swept = [k for k, v in params.items() if "," in str(v) or "(" in str(v)]
    for o in overrides:
        key, _, value = o.lstrip("+~").partition("=")
        if key != "sweep" and ("," in value or "(" in value) and key not in swept:
            swept.append(key)
    preset = next((o.split("=", 1)[1] for o in overrides if o.startswith("sweep=")), None)
    what = ", ".join(swept) or "one job"
    name = f"{preset}: {what}" if preset else what
    return name if len(name) <= 200 else name[:197] + "..."


class MlflowParentRun(Callback):
    active: MlflowParentRun | None = None  # this process's multirun callback, once started

    def __init__(self) -> None:
        self.run: tracking.Run | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if JobContext.current().parent_run_id:
            return  # an enclosing process (or a sweeper) already owns the parent run
        raw = OmegaConf.to_container(config.get("tracking", {}), resolve=True)
        cfg = build_dataclass(tracking.TrackingConfig, raw or {}, "tracking")
        if not cfg.enabled:
            return
        overrides = list(config.hydra.overrides.task) if "hydra" in config else []
        name = sweep_name(config, overrides)
        try:
            client = tracking.client_for(cfg.uri)
            exp_id = tracking._retry(tracking.ensure_experiment, client, cfg.experiment)
            run = tracking._retry(client.create_run, exp_id, run_name=name,
                                  tags=tracking.redacted({
                **tracking.system_tags(),
                "run_role": "parent",
                "sweep_overrides": " ".join(overrides),
                "sweep_dir": str(config.hydra.sweep.dir) if "hydra" in config else "",
                "mlflow.source.name": "train.py",
            }))
        except Exception as e:
            # Hydra turns a callback's exception into a warning and goes on to run every job
            # against the same store, each logged as a lone run outside any sweep; stop here
            # in one line instead, before any job.
            message = e if isinstance(e, ConfigError) else (
                f"tracking.uri={tracking.redact(tracking.resolve_uri(cfg.uri))}: cannot open "
                f"the sweep's MLflow parent run: {first_line(e)}")
            print(f"error: {redact(message)}", file=sys.stderr)
            sys.exit(2)
        self.run = tracking.Run(client, run.info.run_id)
        MlflowParentRun.active = self
        set_parent_run(self.run.id)
        # If the sweep dies before on_multirun_end, don't leave the parent RUNNING forever.
        atexit.register(self._close, tracking.FAILED)
        # `mlflow ui` 3.17 opens an experiment on its GenAI overview unless its GenAI / Model
        # training switch says otherwise: this address sets the switch and opens the runs table.
        log.info("mlflow parent run %s (%s) for this multirun; in `mlflow ui`: %s",
                 self.run.id, name, tracking.experiment_ui_path(exp_id))

    def adopt(self, run: tracking.Run) -> None:
        """Make `run` the parent instead of the one opened at start, which is ended and deleted
        (it has no children yet). A sweeper that resumes or joins an Optuna study calls this so
        that every trial of the study lands under the study's one parent run."""
        if self.run is not None and self.run.id != run.id:
            # ended first: a deleted run stays in the store, and must not stay RUNNING there
            self.run.end(tracking.FINISHED)
            self.run.client.delete_run(self.run.id)
        self.run = run
        set_parent_run(run.id)

    @classmethod
    def tag_active(cls, tags: dict[str, str]) -> None:
        """Tag the multirun's parent run (e.g. with the error that stops the sweep)."""
        if cls.active is not None and cls.active.run is not None:
            cls.active.run.set_tags(tags)

    @classmethod
    def discard_active(cls) -> None:
        """Delete the multirun's parent run when the sweep stops before any job ran (a bad
        sweeper setting fails after Hydra has run this callback): an empty FAILED run would
        only clutter the UI. A parent that has child runs (e.g. a resumed study's) is kept."""
        cb = cls.active
        if cb is None or cb.run is None:
            return
        run = cb.run
        exp_id = run.client.get_run(run.id).info.experiment_id
        if run.client.search_runs([exp_id], f"tags.`{tracking.PARENT_TAG}` = '{run.id}'",
                                  max_results=1):
            return
        cb.run = None
        if JobContext.current().parent_run_id == run.id:
            set_parent_run(None)
        run.end(tracking.FAILED)  # not RUNNING, even among deleted runs
        run.client.delete_run(run.id)

    @classmethod
    def end_active(cls, status: str) -> None:
        """End the multirun's parent run now (e.g. KILLED when the sweep is interrupted)."""
        if cls.active is not None:
            cls.active._close(status)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._close(tracking.FINISHED)

    def _close(self, status: str) -> None:
        if self.run is None:
            return
        run, self.run = self.run, None
        if JobContext.current().parent_run_id == run.id:
            set_parent_run(None)
        try:
            run.end(status)
        except Exception as e:  # at interpreter exit the store may be gone; nothing to lose
            log.warning("could not close parent run %s: %s", run.id, e)
