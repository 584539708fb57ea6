"""Runs from MLflow as one pandas DataFrame: one row per finished run.

Columns: `run_id`, `run_name`, `experiment_id`, `status`, `start_time`; every metric under its
flat name (`accuracy`, `size_bytes`, ...); every param under its config name (`pruning.method`,
`model.width`, ..., numeric where every value parses as a number); tags as `tags.<name>`.
Parent runs (tag run_role=parent) describe a sweep, not a model, and are left out; so are runs
that did not finish (FAILED, KILLED, still RUNNING), which are counted in `RunTable.excluded`.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from mlflow.entities import Run, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from compression.analysis.selection import LATEST, Selection
from compression.core.errors import ConfigError, first_line
from compression.core.redaction import redact
from compression.tracking import PARENT_TAG, client_for

PAGE = 1000
STUDY_TAG = "study_name"  # set by the Optuna sweeper on the parent and on every trial's run


@dataclass
class RunTable:
    frame: pd.DataFrame  # finished runs only
    excluded: dict[str, int] = field(default_factory=dict)  # status -> count of left-out runs
    parent_run_id: str | None = None  # where a sweep's analysis artifacts are logged
    uri: str = ""
    sweep_name: str | None = None  # the resolved sweep: study name, else parent name + id

    @property
    def n_excluded(self) -> int:
        return sum(self.excluded.values())

    def summary(self) -> str:
        left = ", ".join(f"{n} {s}" for s, n in sorted(self.excluded.items())) or "none"
        parent = f", parent run {self.parent_run_id}" if self.parent_run_id else ""
        return f"{len(self.frame)} finished runs (left out: {left}){parent}"


def run_record(run: Run) -> dict[str, Any]:
    """One MLflow run as a flat dict (see the module docstring for the column names)."""
    rec: dict[str, Any] = {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "experiment_id": run.info.experiment_id,
        "status": run.info.status,
        "start_time": run.info.start_time,
    }
    rec.update(run.data.params)
    rec.update(run.data.metrics)
    rec.update({f"tags.{k}": v for k, v in run.data.tags.items()})
    return rec


def _numeric_params(frame: pd.DataFrame, names: Iterable[str]) -> pd.DataFrame:
    """MLflow stores params as strings; make `0.9` a float again where a whole column parses."""
    for col in names:
        with contextlib.suppress(ValueError, TypeError):  # text params such as pruning.method
            frame[col] = pd.to_numeric(frame[col])
    return frame


def runs_to_frame(records: list[Mapping[str, Any]]) -> RunTable:
    """Split records into finished runs (the frame) and counted left-outs; drops parent runs."""
    kept, excluded = [], Counter()
    for rec in records:
        if rec.get("tags.run_role") == "parent":
            continue
        if rec.get("status", "FINISHED") == "FINISHED":
            kept.append(dict(rec))
        else:  # a sweep's pruner stopped it early: shown as PRUNED, not as killed
            excluded["PRUNED" if rec.get("tags.trial_state") == "PRUNED"
                     else str(rec["status"])] += 1
    frame = pd.DataFrame(kept)
    params = [c for c in frame.columns if "." in c and not c.startswith("tags.")]
    frame = _numeric_params(frame, params)
    if "start_time" in frame:
        frame = frame.sort_values(["start_time", "run_id"], kind="stable").reset_index(drop=True)
    return RunTable(frame, dict(excluded))


def _search(client: MlflowClient, exp_ids: list[str], filter_string: str) -> list[Run]:
    runs: list[Run] = []
    token = None
    while True:
        try:
            page = client.search_runs(exp_ids, filter_string, ViewType.ACTIVE_ONLY,
                                      max_results=PAGE, page_token=token)
        except MlflowException as e:
            if e.error_code != "INVALID_PARAMETER_VALUE":
                raise
            # a malformed --filter: MLflow's own message names the clause it could not parse
            raise ConfigError(f"--filter {filter_string!r}: {first_line(e)}") from None
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _experiment_ids(client: MlflowClient, name: str | None) -> list[str]:
    if name is None:
        return [e.experiment_id for e in client.search_experiments()]
    exp = client.get_experiment_by_name(name)
    if exp is None:
        known = ", ".join(e.name for e in client.search_experiments()) or "none"
        raise ConfigError(f"--experiment={name!r} does not exist at {redact(client.tracking_uri)}; "
                          f"known: {known}")
    return [exp.experiment_id]


def _and(*clauses: str | None) -> str:
    return " and ".join(c for c in clauses if c)


def _resolve_sweep(client: MlflowClient, exp_ids: list[str], sweep: str
                   ) -> tuple[str, str, str]:
    """(filter selecting the sweep's runs, parent run id, the sweep's name: its study name, else
    its parent run id) for a parent run id, study or latest."""
    if sweep == LATEST:
        parents = client.search_runs(exp_ids, "tags.run_role = 'parent'", max_results=1,
                                     order_by=["attributes.start_time DESC"])
        if not parents:
            raise ConfigError(f"--sweep latest: no parent run at {redact(client.tracking_uri)}")
        sweep = parents[0].info.run_id
    try:
        parent = client.get_run(sweep)
    except MlflowException:
        parent = None
    if parent is not None:
        # a study's name, else the parent run's (what it sweeps) with the id's start, since
        # two multiruns over the same keys share their run name
        name = parent.data.tags.get(STUDY_TAG) or f"{parent.info.run_name}-{sweep[:8]}"
        return f"tags.`{PARENT_TAG}` = '{sweep}'", sweep, name
    # A study may span several sessions (each its own parent run): select by the study tag and
    # log the analysis to the most recent of its parents.
    quoted = sweep.replace("'", "\\'")
    tagged = _search(client, exp_ids, f"tags.{STUDY_TAG} = '{quoted}'")
    if not tagged:
        raise ConfigError(f"--sweep={sweep!r} is neither a run id nor a study name "
                          f"at {redact(client.tracking_uri)}")
    parents = [r for r in tagged if r.data.tags.get("run_role") == "parent"]
    latest = max(parents, key=lambda r: r.info.start_time, default=None)
    return f"tags.{STUDY_TAG} = '{quoted}'", latest.info.run_id if latest else "", sweep


def load_runs(selection: Selection) -> RunTable:
    """Every run the selection names, from the database or tracking server at selection.uri."""
    client = client_for(selection.uri)  # a dead store: one line at once, not minutes of retries
    exp_ids = _experiment_ids(client, selection.experiment)
    parent_id = sweep_name = sweep_filter = None
    if selection.sweep:
        sweep_filter, parent_id, sweep_name = _resolve_sweep(client, exp_ids, selection.sweep)
    runs = _search(client, exp_ids, _and(sweep_filter, selection.filter))
    table = runs_to_frame([run_record(r) for r in runs])
    table.parent_run_id = parent_id or None
    table.sweep_name = sweep_name
    table.uri = selection.uri
    return table
