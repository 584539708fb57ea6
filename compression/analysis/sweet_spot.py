"""The sweet spot: the most compressed (or fastest) run that stays within an accuracy tolerance."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from compression.analysis.derive import SMALL_DENSE, relative_latency
from compression.analysis.pareto import Objective, knee_index, pareto_mask
from compression.analysis.runtimes import RANK_COLUMN
from compression.analysis.tables import markdown as markdown_table
from compression.analysis.tables import number, points
from compression.core import validation as v
from compression.core.registry import Registry
from compression.training import quality


@dataclass(frozen=True)
class SpotCriterion:
    """What `--by` minimises: a column of the run table, and how the report says it."""

    column: str
    what: str


# `--by` picks what "most compressed" means: the column to minimise. Latency is ranked by the
# run's latency relative to its own baseline, timed interleaved in the same process (1/speedup):
# raw latencies of different runs were measured at different moments on a shared machine, and
# their noise can make the uncompressed model look fastest.
SPOT_CRITERIA: Registry[SpotCriterion] = Registry("--by")
SPOT_CRITERIA.add("size", SpotCriterion("size_bytes", "smallest file"))
SPOT_CRITERIA.add("latency", SpotCriterion(
    "relative_latency", "fastest relative to its own baseline (interleaved speedup)"))
SPOT_CRITERIA.add("flops", SpotCriterion("effective_flops", "fewest effective FLOPs"))
# runtime latency, ranked by the interleaved ratio to the runtime's fp32 (see runtimes.py)
SPOT_CRITERIA.add("rt_latency", SpotCriterion(
    RANK_COLUMN, "fastest in the deployment runtime relative to the runtime's own fp32 baseline "
    "(interleaved rt_speedup)"))
# Accuracy fractions such as 0.9805 - 0.9705 are 0.010000000000000009 in floating point; a drop
# equal to the tolerance up to this slack counts as within it.
EPS = 1e-9
SHOWN = ("accuracy", "accuracy_drop", "val_accuracy_drop", "size_bytes", "compression_ratio",
         "latency_ms", "speedup", "relative_latency", "sparsity", "effective_flops",
         "rt_accuracy", "rt_latency_ms", "rt_speedup", "rt_batch_speedup")
UNITS = {"size_bytes": "B", "latency_ms": "ms", "rt_latency_ms": "ms", "effective_flops": "FLOPs"}
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
    metric: str | None = None  # the runs' metric when not top-1 (the tolerance's unit)

    def to_json(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2, default=float) + "\n")
        return path

    @property
    def filename(self) -> str:
        """One file per criterion, so `sweet-spot --by latency` keeps the report's by-size one."""
        return f"sweet_spot_{self.criterion}.json"

    def headline(self) -> str:
        return (f"sweet spot: {SPOT_CRITERIA[self.criterion].what} with {self.selected_on} "
                f"accuracy drop <= "
                f"{points(self.tolerance, self.metric)} ({self.candidates} of {self.total} "
                "configurations qualify)")

    def _rows(self) -> list[tuple[str, dict[str, Any] | None]]:
        return [("sweet spot", self.best), ("knee", self.knee)]

    def table(self) -> str:
        """A short plain-text table for the terminal."""
        lines = [self.headline()]
        for name, row in self._rows():
            if row is None:
                lines.append(f"  {name:<10}  -")
                continue
            metrics = "  ".join(f"{k}={number(row[k], UNITS.get(k, ''))}"
                                for k in SHOWN if k in row)
            seeds = f", mean of {row['seeds']} seeds" if row.get("seeds", 1) > 1 else ""
            lines.append(f"  {name:<10}  {row['label']}  (run {row['run_id']}{seeds})\n"
                         f"  {'':<10}  {metrics}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def markdown(self) -> str:
        """The same as a Markdown table (one row per pick), for the report."""
        shown = [k for k in SHOWN if any(r and k in r for _, r in self._rows())]
        frame = pd.DataFrame([{"": name, "configuration": r["label"] if r else "-",
                               "run": r["run_id"][:8] if r else "",
                               **({k: r.get(k, float("nan")) for k in shown} if r else {})}
                              for name, r in self._rows()])
        text = f"{self.headline()}; `{self.filename}`.\n\n{markdown_table(frame)}"
        return text + "".join(f"\n\n- note: {n}" for n in self.notes)


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
    tolerance, the one with the smallest SPOT_CRITERIA[by].column; ties go to the better test
    accuracy (the lower perplexity for lower-is-better metrics), then the earlier run (row
    order, then run id). Runs logged without a validation drop make the whole selection fall
    back to the test drop (noted). Without a `config_key` column every run is its own
    configuration. The knee is that of the per-run Pareto front of test accuracy
    against the same criterion."""
    v.one_of("--by", by, SPOT_CRITERIA)
    higher = quality.direction_of(frame) == "max"
    # a fraction for accuracy-like metrics; perplexity's rise has no upper bound
    v.in_range("--tolerance", tolerance, 0, 1 if higher else None)
    v.one_of("--select-on", select_on, DROPS)
    col = SPOT_CRITERIA[by].column
    if col == "relative_latency" and col not in frame and "speedup" in frame:
        frame = frame.assign(relative_latency=relative_latency(frame))  # an underived table
    result = SweetSpot(by, tolerance, 0, len(frame), None, selected_on=select_on,
                       metric=quality.name_of(frame))
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
            [col, "accuracy", "_pos", "run_id"], ascending=[True, not higher, True, True],
            kind="stable")
        result.best = _row(units, ranked.index[0])
    else:
        result.notes.append("no run is within the tolerance; try a larger --tolerance")
    objectives = (Objective(col, "min", log=True),
                  Objective("accuracy", "max" if higher else "min"))
    knee = knee_index(frame[pareto_mask(frame, objectives)], objectives)
    result.knee = None if knee is None else _row(frame, knee)
    return result
