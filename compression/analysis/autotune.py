"""An autotune sweep (`sweep=autotune`) as data for its report page: the target and winner (from
the parent run's `study/autotune.yaml`), every trial's state and objective (PRUNED and FAILED
runs included, which the run table leaves out), the search trace (best feasible objective so far
after each trial), the winner's per-layer allocation, and the best uniform-allocation rival.

Pure apart from `load`, which reads MLflow; drawing is in autotune_plots.py.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.entities import Run, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from compression.analysis.runs import STUDY_TAG

TARGET_FILE = "study/autotune.yaml"  # written by sweep.autotune.AutotuneGoal.finish
ALLOCATION_FILE = "allocation.csv"  # written by run.allocation (sensitivity only)
DIRECTIONS = {"size": "minimize", "latency": "maximize", "rt_latency": "maximize"}
TARGET_COLUMNS = {"size": "size_bytes", "latency": "speedup", "rt_latency": "rt_speedup"}
# state of a trial's MLflow run: FINISHED -> COMPLETE; KILLED with trial_state=PRUNED -> PRUNED
COMPLETE, PRUNED, FAILED = "COMPLETE", "PRUNED", "FAILED"
# which run of a trial speaks for it when there are several (a failed try, then a rerun)
RANK = {COMPLETE: 0, PRUNED: 1, FAILED: 2}


@dataclass
class Target:
    max_drop: float
    relative: bool
    objective: str  # size | latency | rt_latency

    @property
    def metric(self) -> str:
        return TARGET_COLUMNS[self.objective]

    @property
    def drop_metric(self) -> str:
        return "val_accuracy_drop_rel" if self.relative else "val_accuracy_drop"

    @property
    def minimize(self) -> bool:
        return DIRECTIONS[self.objective] == "minimize"


@dataclass
class Autotune:
    target: Target
    winner_trial: int | None
    command: str | None
    trials: pd.DataFrame  # one row per trial: trial, state, run_id, value, drop, feasible

    @property
    def winner_run(self) -> str | None:
        if self.winner_trial is None:
            return None
        rows = self.trials[self.trials["trial"] == self.winner_trial]
        return str(rows["run_id"].iloc[0]) if len(rows) else None


def _state(run: Run) -> str:
    if run.info.status == "FINISHED":
        return COMPLETE
    return PRUNED if run.data.tags.get("trial_state") == PRUNED else FAILED


def trial_table(runs: list[Run], target: Target) -> pd.DataFrame:
    """One row per trial number (its most telling run): state, objective value, validation drop
    and whether it met the target (complete and drop <= max_drop)."""
    rows = []
    for r in runs:
        number = r.data.tags.get("trial_number")
        if r.data.tags.get("run_role") == "parent" or number is None:
            continue
        m = r.data.metrics
        rows.append({"trial": int(number), "state": _state(r), "run_id": r.info.run_id,
                     "value": m.get(target.metric, math.nan),
                     "drop": m.get(target.drop_metric, math.nan)})
    cols = ["trial", "state", "run_id", "value", "drop", "feasible"]
    if not rows:
        return pd.DataFrame(columns=cols)
    frame = pd.DataFrame(rows)
    frame["rank"] = frame["state"].map(RANK)
    frame = (frame.sort_values(["trial", "rank"], kind="stable").drop_duplicates("trial")
             .drop(columns="rank").reset_index(drop=True))
    frame["feasible"] = (frame["state"] == COMPLETE) & (frame["drop"] <= target.max_drop)
    return frame[cols]


def trace(trials: pd.DataFrame, minimize: bool) -> pd.Series:
    """The best feasible objective after each trial (NaN until the first feasible one)."""
    values = trials["value"].where(trials["feasible"])
    best = values.cummin() if minimize else values.cummax()
    return best.ffill()  # cummin leaves NaN where a trial had no feasible value


def is_autotune(client: MlflowClient, parent_run_id: str | None) -> bool:
    if not parent_run_id:
        return False
    try:
        names = {f.path for f in client.list_artifacts(parent_run_id, "study")}
    except MlflowException:
        return False
    return TARGET_FILE in names


def load(client: MlflowClient, parent_run_id: str) -> Autotune:
    """The sweep's target, winner and trials; the trials of every session of the study (a
    resumed study has one parent run per session)."""
    parent = client.get_run(parent_run_id)
    with tempfile.TemporaryDirectory() as tmp:
        doc: dict[str, Any] = OmegaConf.to_container(  # type: ignore[assignment]
            OmegaConf.load(client.download_artifacts(parent_run_id, TARGET_FILE, tmp)))
    t = doc.get("target") or {}
    target = Target(float(t.get("max_drop", 0.01)), bool(t.get("relative", False)),
                    str(t.get("objective", "size")))
    winner = doc.get("winner") or {}
    study = parent.data.tags.get(STUDY_TAG, "").replace("'", "\\'")
    runs = client.search_runs([parent.info.experiment_id], f"tags.{STUDY_TAG} = '{study}'",
                              ViewType.ACTIVE_ONLY, max_results=5000)
    return Autotune(target, winner.get("trial"), doc.get("command"), trial_table(runs, target))


def allocation(client: MlflowClient, run_id: str, layers: pd.DataFrame | None = None
               ) -> pd.DataFrame:
    """The run's per-layer allocation: columns layer, sparsity (the target the allocation gave
    it), and `bits` when the run allocated bit widths per layer. A run without allocation.csv
    (uniform allocation) falls back on its measured per-layer sparsity (`layers`)."""
    try:
        with tempfile.TemporaryDirectory() as tmp:
            table = pd.read_csv(client.download_artifacts(run_id, ALLOCATION_FILE, tmp))
    except (MlflowException, OSError):
        table = None
    if table is None or "target_sparsity" not in table:
        if layers is None or layers.empty:
            return pd.DataFrame(columns=["layer", "sparsity"])
        out = layers[["layer", "sparsity"]].copy()
        out.attrs["source"] = "measured: uniform allocation has no allocation.csv"
        return out
    out = table.rename(columns={"target_sparsity": "sparsity"})
    bits = next((c for c in out.columns if "bits" in c.lower()), None)
    keep = ["layer", "sparsity", *([bits] if bits else [])]
    out = out[keep].rename(columns={bits: "bits"} if bits else {})
    out.attrs["source"] = ALLOCATION_FILE
    return out


def rivals(frame: pd.DataFrame, tune: Autotune) -> pd.DataFrame:
    """The winner beside the best feasible uniform-allocation trial (or, when the winner is
    itself uniform, the best sensitivity-allocated one): a `role` column, then frame's columns.
    Uniform: every run not allocated by sensitivity (the other methods allocate uniformly)."""
    if "tags.trial_number" not in frame:
        return frame.iloc[:0]
    number = pd.to_numeric(frame["tags.trial_number"], errors="coerce")
    ok = tune.trials.loc[tune.trials["feasible"], "trial"]
    feasible = frame[number.isin(ok)]
    alloc = feasible.get("pruning.allocation", pd.Series("uniform", index=feasible.index))
    sensitive = alloc.fillna("uniform").astype(str) == "sensitivity"
    metric = tune.target.metric

    def top(pool: pd.DataFrame) -> pd.DataFrame:
        if pool.empty or metric not in pool:
            return pool.iloc[:0]
        return pool.sort_values(metric, ascending=tune.target.minimize, kind="stable").head(1)

    winner = frame[number == tune.winner_trial].head(1)
    others = (number[feasible.index] != tune.winner_trial)
    if len(winner) and bool((winner.get("pruning.allocation") == "sensitivity").any()):
        picks = [("winner", winner), ("best uniform", top(feasible[~sensitive & others]))]
    else:  # the winner is the best uniform trial itself: show the best sensitivity one
        picks = [("winner", winner), ("best sensitivity", top(feasible[sensitive & others]))]
    parts = [p.assign(role=role) for role, p in picks if len(p)]
    if not parts:
        return frame.iloc[:0]
    out = pd.concat(parts)
    return out[["role", *[c for c in out.columns if c != "role"]]]


def winner_text(tune: Autotune, frame: pd.DataFrame) -> str:
    """The winner block (Markdown): what met the target, its figures and its command."""
    t = tune.target
    drop = f"{t.drop_metric} <= {t.max_drop:g}"
    counts = tune.trials["state"].value_counts().to_dict()
    states = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    feasible = int(tune.trials["feasible"].sum())
    head = (f"Target: {'minimize' if t.minimize else 'maximize'} `{t.metric}` within `{drop}`. "
            f"{len(tune.trials)} trials ({states}); {feasible} met the target.")
    if tune.winner_trial is None:
        return head + "\n\nNo trial met the target: no winner."
    lines = [head, "", f"**Winner: trial {tune.winner_trial}**"]
    number = pd.to_numeric(frame.get("tags.trial_number"), errors="coerce")
    row = frame[number == tune.winner_trial].head(1) if "tags.trial_number" in frame else None
    if row is not None and len(row):
        r = row.iloc[0]
        for col, fmt in (("label", "{}"), ("accuracy", "{:.2%}"), ("val_accuracy_drop", "{:+.4f}"),
                         ("accuracy_drop", "{:+.4f}"), ("compression_ratio", "{:.2f}x"),
                         ("size_bytes", "{:,.0f} B"), ("sparsity", "{:.2%}"),
                         ("speedup", "{:.2f}x")):
            if col in row and pd.notna(r[col]):
                lines.append(f"- {col}: {fmt.format(r[col])}")
    if tune.command:
        lines += ["", "Reproduce with:", "", "```bash", tune.command, "```"]
    return "\n".join(lines)


def write_trace(tune: Autotune, path: Path) -> Path:
    table = tune.trials.assign(best_so_far=trace(tune.trials, tune.target.minimize))
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    return path
