"""Analysis of finished runs: MLflow runs -> a DataFrame -> curves, Pareto fronts, the sweet spot,
per-layer views, model profiles and reports.

Everything here is pure data (pandas in, pandas / dataclasses out) except `plots` (matplotlib) and
`report` (files and MLflow artifacts), as Optuna keeps its Pareto front apart from its plots.
`analyze.py` at the project root is the command line over these modules.
"""

from compression.analysis.curves import aggregate_curves, curve_auc
from compression.analysis.derive import derive
from compression.analysis.pareto import knee_index, pareto_mask
from compression.analysis.runs import RunTable, load_runs, runs_to_frame
from compression.analysis.selection import Selection
from compression.analysis.sweet_spot import SPOT_CRITERIA, SweetSpot, sweet_spot

__all__ = [
    "SPOT_CRITERIA", "RunTable", "Selection", "SweetSpot", "aggregate_curves",
    "curve_auc", "derive", "knee_index", "load_runs", "pareto_mask", "runs_to_frame", "sweet_spot",
]
