"""End-of-sweep results: the best / Pareto trials as a table (CSV), a YAML file in the format of
Hydra's official Optuna sweeper (`best_params`/`best_value`, or `solutions`), and log lines."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from omegaconf import OmegaConf
from optuna.trial import FrozenTrial


def best_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Feasible Pareto-optimal trials (one best trial for a single objective); Optuna leaves
    out trials that violate a constraint set with Trial.set_constraint."""
    try:
        return sorted(study.best_trials, key=lambda t: t.number)
    except ValueError:  # no complete trial yet
        return []


def pareto_rows(trials: Sequence[FrozenTrial], objectives: Sequence[str]) -> list[dict[str, Any]]:
    rows = []
    for t in trials:
        row: dict[str, Any] = {"trial_number": t.number}
        row.update(zip(objectives, t.values or [], strict=False))
        row.update({f"params.{k}": val for k, val in t.params.items()})
        row.update({f"constraint.{k}": val for k, val in t.user_attrs.get("constraints",
                                                                         {}).items()})
        rows.append(row)
    return rows


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """Optuna's table of every trial, plus `feasible` when the sweep has constraints (its
    `user_attrs_constraints` hold metric - bound per constraint: <= 0 is within it)."""
    table = study.trials_dataframe()
    constraints = [t.user_attrs.get("constraints") for t in study.trials]
    if any(c is not None for c in constraints):
        table["feasible"] = [None if c is None else all(v <= 0 for v in c.values())
                             for c in constraints]
    return table


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    columns = list(dict.fromkeys(k for r in rows for k in r)) or ["trial_number"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
    return path


def write_yaml(study: optuna.Study, trials: Sequence[FrozenTrial], objectives: Sequence[str],
               path: Path) -> Path:
    doc: dict[str, Any] = {"name": "optuna", "study_name": study.study_name,
                           "objectives": list(objectives),
                           "directions": [d.name.lower() for d in study.directions]}
    if len(study.directions) == 1:
        best = trials[0] if trials else None
        doc.update(best_params=dict(best.params) if best else None,
                   best_value=best.value if best else None,
                   best_trial_number=best.number if best else None)
    else:
        doc["solutions"] = [{"trial_number": t.number, "params": dict(t.params),
                             "values": list(t.values)} for t in trials]
    path.parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(doc), path)
    return path


def summary(study: optuna.Study, trials: Sequence[FrozenTrial], objectives: Sequence[str]) -> str:
    head = ("Best trial" if len(study.directions) == 1 else
            f"Pareto set ({len(trials)} feasible trial(s))")
    lines = [f"{head} of study {study.study_name} ({', '.join(objectives)}):"]
    for t in trials:
        values = ", ".join(f"{n}={v:.6g}" for n, v in zip(objectives, t.values, strict=False))
        params = " ".join(f"{k}={val}" for k, val in t.params.items())
        lines.append(f"  #{t.number}: {values} | {params}")
    if not trials:
        lines.append("  (no complete feasible trial)")
    return "\n".join(lines)
