"""The sweet spot: the most compressed (or fastest) run that stays within an accuracy tolerance."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from compression import validation as v
from compression.analysis.derive import SMALL_DENSE
from compression.analysis.pareto import Objective, knee_index, pareto_mask
from compression.analysis.runtimes import RANK_COLUMN

# `--by` picks what "most compressed" means: the column to minimise.
CRITERIA: dict[str, str] = {
    "size": "size_bytes",
    "latency": "latency_ms",
    "flops": "effective_flops",
    # runtime latency, ranked by the interleaved ratio to the runtime's fp32 (see runtimes.py)
    "rt_latency": RANK_COLUMN,
}
# Accuracy fractions such as 0.9805 - 0.9705 are 0.010000000000000009 in floating point; a drop
# equal to the tolerance up to this slack counts as within it.
EPS = 1e-9
SHOWN = ("accuracy", "accuracy_drop", "val_accuracy_drop", "size_bytes", "compression_ratio",
         "latency_ms", "speedup", "sparsity", "effective_flops",
         "rt_accuracy", "rt_latency_ms", "rt_speedup", "rt_batch_speedup")
# `--select-on` picks the accuracy drop that qualifies a configuration. Choosing among many
# configurations by their test accuracy would make the chosen one's test accuracy optimistic,
# so the validation drop decides by default (as the Optuna sweeper's constraints do) and the
# test accuracy is what is reported.
DROPS: dict[str, str] = {"val": "val_accuracy_drop", "test": "accuracy_drop"}


@dataclass
class SweetSpot:
    criterion: str
    tolerance: float
    candidates: int  # configurations (runs, seeds averaged) within the tolerance
    total: int  # configurations considered
    best: dict[str, Any] | None  # the chosen run's id, label and metrics; None if no run fits
    knee: dict[str, Any] | None = None  # knee of the accuracy-vs-criterion front
    notes: list[str] = field(default_factory=list)
    selected_on: str = "val"  # the accuracy drop that qualified: a key of DROPS

    def to_json(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2, default=float) + "\n")
        return path

    def table(self) -> str:
        """A short plain-text table for the terminal."""
        head = (f"sweet spot: smallest {CRITERIA[self.criterion]} with {self.selected_on} "
                f"accuracy drop <= {self.tolerance * 100:g} points ({self.candidates} of "
                f"{self.total} configurations qualify)")
        lines = [head]
        for name, row in (("sweet spot", self.best), ("knee", self.knee)):
            if row is None:
                lines.append(f"  {name:<10}  -")
                continue
            metrics = "  ".join(f"{k}={_fmt(row[k])}" for k in SHOWN if k in row)
            seeds = f", mean of {row['seeds']} seeds" if row.get("seeds", 1) > 1 else ""
            lines.append(f"  {name:<10}  {row['label']}  (run {row['run_id']}{seeds})\n"
                         f"  {'':<10}  {metrics}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _fmt(x: Any) -> str:
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def _row(units: pd.DataFrame, idx: Any) -> dict[str, Any]:
    r = units.loc[idx]
    out = {"run_id": r["run_id"], "label": r.get("label", r["run_id"])}
    if "run_ids" in r:
        out["run_ids"] = list(r["run_ids"])
        out["seeds"] = len(r["run_ids"])
    out.update({k: float(r[k]) for k in SHOWN if k in r and pd.notna(r[k])})
    return out


def config_means(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration (runs sharing `config_key` differ only by seed): numeric columns
    averaged, `run_id` the first run's, `run_ids` all of them. A lucky seed cannot make a
    configuration look within tolerance when its mean is not."""
    groups = frame.groupby("config_key", sort=False)
    numeric = frame.select_dtypes("number").columns.tolist()
    means = groups[numeric].mean()
    firsts = groups[[c for c in ("run_id", "label") if c in frame]].first()
    ids = groups["run_id"].agg(list).rename("run_ids")
    return pd.concat([firsts, means, ids], axis=1).reset_index(drop=True)


def sweet_spot(frame: pd.DataFrame, tolerance: float = 0.01, by: str = "size",
               select_on: str = "val") -> SweetSpot:
    """Among configurations whose (seed-mean) accuracy drop on `select_on` (val or test) is <=
    tolerance, the one with the smallest CRITERIA[by]; ties go to the higher test accuracy, then
    the earlier run (row order, then run id). Runs logged without a validation drop make the
    whole selection fall back to the test drop (noted). Without a `config_key` column every run
    is its own configuration. The knee is that of the per-run Pareto front of test accuracy
    against the same criterion."""
    v.one_of("--by", by, CRITERIA)
    v.in_range("--tolerance", tolerance, 0, 1)
    v.one_of("--select-on", select_on, DROPS)
    col = CRITERIA[by]
    result = SweetSpot(by, tolerance, 0, len(frame), None, selected_on=select_on)
    if col not in frame or frame.empty:
        result.notes.append(f"no runs with {col}")
        return result
    if "role" in frame and "ref_accuracy" in frame:
        lone = int((frame["role"].eq(SMALL_DENSE) & frame["ref_accuracy"].isna()).sum())
        if lone:
            result.notes.append(f"{lone} small-dense run(s) have no full-width dense run of their "
                                "model and data in the selection, so their accuracy drop and "
                                "compression are against their own small baseline; select the "
                                "full-width runs too (e.g. --experiment)")
    units = config_means(frame) if "config_key" in frame else frame
    drop = DROPS[select_on]
    if drop not in units or units[drop].isna().any():
        missing = len(units) if drop not in units else int(units[drop].isna().sum())
        result.notes.append(f"{missing} configuration(s) have no {drop} (logged before it "
                            "existed): selected on the test accuracy drop")
        result.selected_on, drop = "test", DROPS["test"]
    ok = units[(units[drop] <= tolerance + EPS) & units[col].notna()]
    result.candidates, result.total = len(ok), len(units)
    if len(ok):
        ranked = ok.assign(_pos=range(len(ok))).sort_values(
            [col, "accuracy", "_pos", "run_id"], ascending=[True, False, True, True],
            kind="stable")
        result.best = _row(units, ranked.index[0])
    else:
        result.notes.append("no run is within the tolerance; try a larger --tolerance")
    objectives = (Objective(col, "min", log=True), Objective("accuracy", "max"))
    knee = knee_index(frame[pareto_mask(frame, objectives)], objectives)
    result.knee = None if knee is None else _row(frame, knee)
    return result
