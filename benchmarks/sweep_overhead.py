"""Sweep overhead and parallel throughput of `hydra/sweeper=optuna`, measured side by side.

1. A 10-trial digits sweep (default training settings, fresh baseline cache): wall time of the
   whole `python train.py -m ...` command vs time spent training the baseline and fine-tuning
   (from the trials' MLflow metrics); the rest is framework overhead (process start-up, Hydra,
   Optuna, MLflow, measurement, baseline cache). Target: overhead <= 15% of wall time.
2. The same kind of sweep (baseline already cached) with 1 worker and with 2 joblib workers:
   trials per minute of each and their ratio. Target: 2 workers >= 1.7x.

Run: python benchmarks/sweep_overhead.py [--trials 10] [--parallel-trials 8]
Timing on a shared machine is noisy: compare the ratios, not the absolute seconds.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parent.parent
SPACE = ["pruning=unstructured", "pruning.sparsity=interval(0.5,0.95)",
         "quantization=none,dynamic_int8", "hydra.sweeper.sampler=random", "hydra.sweeper.seed=0"]


def sweep(tmp: Path, study: str, n_trials: int, *extra: str) -> float:
    """Run one sweep as a user would; returns its wall time in seconds."""
    cmd = [sys.executable, "train.py", "-m", "hydra/sweeper=optuna", *SPACE,
           f"hydra.sweeper.n_trials={n_trials}", f"hydra.sweeper.study_name={study}",
           f"hydra.sweeper.storage={tmp / 'optuna.journal'}", f"hydra.sweep.dir={tmp / study}",
           f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}", f"paths.cache={tmp / 'cache'}",
           f"paths.artifacts={tmp / 'artifacts'}", *extra]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        sys.exit(f"sweep {study} failed:\n{out.stderr[-3000:]}")
    return wall


def children(tmp: Path, study: str) -> list:
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}")
    exp = client.get_experiment_by_name("compression")
    return client.search_runs([exp.experiment_id], f"tags.study_name = '{study}' and "
                              "tags.run_role = 'child'", max_results=1000)


def span_seconds(tmp: Path, study: str) -> float:
    """First trial's start to last trial's end: the sweep without process start-up."""
    runs = children(tmp, study)
    return (max(r.info.end_time for r in runs) - min(r.info.start_time for r in runs)) / 1000


def training_seconds(tmp: Path, study: str) -> float:
    runs = children(tmp, study)
    return sum(r.data.metrics.get("baseline_train_seconds", 0.0)
               + r.data.metrics.get("finetune_seconds", 0.0) for r in runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--parallel-trials", type=int, default=8)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        wall = sweep(tmp, "overhead", args.trials)
        train = training_seconds(tmp, "overhead")
        rest = wall - train
        print(f"{args.trials}-trial digits sweep: wall {wall:.1f}s, training/fine-tuning "
              f"{train:.1f}s, rest (framework overhead) {rest:.1f}s = {100 * rest / wall:.1f}% "
              "of wall (target <= 15%)")

        n = args.parallel_trials
        one = sweep(tmp, "workers1", n)
        two = sweep(tmp, "workers2", n, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                    "hydra.sweeper.n_jobs=2")
        print(f"{n} trials, baseline cached: 1 worker {60 * n / one:.2f} trials/min "
              f"({one:.1f}s), 2 joblib workers {60 * n / two:.2f} trials/min ({two:.1f}s): "
              f"{one / two:.2f}x (target >= 1.7x)")
        s1, s2 = span_seconds(tmp, "workers1"), span_seconds(tmp, "workers2")
        print(f"  first trial start to last trial end: 1 worker {s1:.1f}s, 2 workers {s2:.1f}s: "
              f"{s1 / s2:.2f}x")


if __name__ == "__main__":
    main()
