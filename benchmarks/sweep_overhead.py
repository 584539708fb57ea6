"""Sweep overhead and parallel throughput of `hydra/sweeper=optuna`, measured side by side.

1. 10-trial digits sweeps (fresh baseline cache each): wall time of the whole
   `python train.py -m ...` command vs time spent training the baseline and fine-tuning (from the
   trials' MLflow metrics); the rest is framework overhead (process start-up and imports, Hydra,
   Optuna, MLflow, measurement, baseline cache). The rest is also split into the fixed start-up
   (command start to the first trial's MLflow run) and the cost per trial. Two workloads:
   `default` (mlp, 5 fine-tuning epochs: about 0.1 s of training per trial, so the fixed
   start-up of a Python process that imports torch and MLflow dominates) and a training-bound
   one (`--heavy`, by default the residual CNN with 20 fine-tuning epochs), for which the target
   applies. Target: overhead <= 15% of wall time.
2. The training-bound sweep (baseline already cached) with 1 and with 2 joblib workers (the basic
   launcher, which runs jobs in the sweep's own process, is shown too, and so are 2 workers
   started as fresh interpreters, `fork_workers=false`, instead of forked): trials per minute and
   their ratio, over the whole command and from the first trial's start to the last one's end
   (steady state, without process start-up). Target: 2 workers >= 1.7x 1 worker. Next to it, the
   ceiling this machine allows: 2 workers can do at most 2 x (1-thread training speed, slowed by
   a second training process running at the same time) / (2-thread training speed of 1 worker).

Run: python benchmarks/sweep_overhead.py [--trials 10] [--parallel-trials 8]
         [--heavy model=resnet finetune.epochs=20]
Timing on a shared machine is noisy: run it on an otherwise idle machine and compare ratios.
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
HEAVY = ["model=resnet", "finetune.epochs=20"]


def sweep(tmp: Path, study: str, n_trials: int, *extra: str) -> float:
    """Run one sweep as a user would; returns its wall time in seconds."""
    cmd = [sys.executable, "train.py", "-m", "hydra/sweeper=optuna", *SPACE,
           f"hydra.sweeper.n_trials={n_trials}", f"hydra.sweeper.study_name={study}",
           f"hydra.sweeper.storage={tmp / 'optuna.journal'}", f"hydra.sweep.dir={tmp / study}",
           f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}", f"paths.artifacts={tmp / 'artifacts'}",
           *extra]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        sys.exit(f"sweep {study} failed:\n{out.stderr[-3000:]}")
    return wall


def children(tmp: Path, study: str) -> list:
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}")
    exp = client.get_experiment_by_name("compression")
    runs = client.search_runs([exp.experiment_id], f"tags.study_name = '{study}' and "
                              "tags.run_role = 'child'", max_results=1000)
    assert all(r.info.status == "FINISHED" for r in runs), "a trial did not finish"
    return runs


def span_seconds(runs: list) -> float:
    """First trial's start to last trial's end: the sweep without process start-up."""
    return (max(r.info.end_time for r in runs) - min(r.info.start_time for r in runs)) / 1000


def training_seconds(runs: list) -> float:
    return sum(r.data.metrics.get("baseline_train_seconds", 0.0)
               + r.data.metrics.get("finetune_seconds", 0.0) for r in runs)


def overhead(tmp: Path, label: str, n: int, extra: list[str]) -> None:
    study = f"overhead-{label}"
    wall = sweep(tmp, study, n, f"paths.cache={tmp / study / 'cache'}", *extra)
    runs = children(tmp, study)
    train, span = training_seconds(runs), span_seconds(runs)
    rest = wall - train
    startup = wall - span  # command start to first trial, plus the study's wrap-up
    print(f"{label:8s} {n}-trial digits sweep ({' '.join(extra) or 'mlp, defaults'}): wall "
          f"{wall:.1f}s, training/fine-tuning {train:.1f}s ({train / n:.2f}s/trial), rest "
          f"{rest:.1f}s = {100 * rest / wall:.1f}% of wall (target <= 15%: "
          f"{'met' if rest <= 0.15 * wall else 'NOT met'})")
    per_trial = (span - train) / n
    print(f"{'':8s} rest = fixed start-up/wrap-up {startup:.1f}s + {per_trial:.2f}s per trial "
          f"(Hydra job, MLflow, measurement, cache); <= 15% once trials train "
          f">= {(startup / n + per_trial) * 0.85 / 0.15:.1f}s each")


def _train_child(model: str, epochs: int, threads: int) -> None:
    """Child process: print the seconds `epochs` of baseline-style training take."""
    import logging

    import torch

    sys.path.insert(0, str(ROOT))
    from compression.data import DataConfig, load
    from compression.models.build import ModelConfig, build_model
    from compression.training.loop import TrainConfig, train

    logging.disable(logging.INFO)
    torch.set_num_threads(threads)
    data = load(DataConfig())
    net = build_model(ModelConfig(name=model), data.spec)
    train(net, data, TrainConfig(epochs=1), seed=0, desc="warm-up")
    t0 = time.perf_counter()
    train(net, data, TrainConfig(epochs=epochs), seed=0, desc="timed")
    print(time.perf_counter() - t0)


def _timed_children(model: str, epochs: int, threads: int, copies: int) -> float:
    cmd = [sys.executable, __file__, "--train-child", model, str(epochs), str(threads)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(copies)]
    return max(float(p.communicate()[0].split()[-1]) for p in procs)


def ceiling(model: str, epochs: int = 5) -> float:
    """Best ratio 2 single-thread workers can reach over 1 worker training with 2 threads."""
    one, two = (_timed_children(model, epochs, t, 1) for t in (1, 2))
    pair = _timed_children(model, epochs, 1, 2)
    print(f"ceiling ({model}, {epochs} epochs of training): 1 thread {one:.2f}s, 2 threads "
          f"{two:.2f}s ({one / two:.2f}x), two 1-thread processes at once {pair:.2f}s each "
          f"({pair / one:.2f}x slower): in training alone 2 workers can reach at most "
          f"{2 * two / pair:.2f}x (the rest of a trial runs on one thread and scales better)")
    return 2 * two / pair


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--train-child":
        _train_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--parallel-trials", type=int, default=8)
    ap.add_argument("--heavy", nargs="*", default=HEAVY,
                    help="overrides of the training-bound workload (default: %(default)s)")
    ap.add_argument("--only", choices=("overhead", "workers"),
                    help="run one part (workers: its baseline is trained first, untimed)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if args.only != "workers":
            overhead(tmp, "default", args.trials, [])
            overhead(tmp, "heavy", args.trials, args.heavy)
            if args.only == "overhead":
                return
        else:  # fill the cache the worker sweeps share
            sweep(tmp, "overhead-heavy", 1, f"paths.cache={tmp / 'overhead-heavy' / 'cache'}",
                  *args.heavy)

        # the same workload with the heavy sweep's baseline already in this cache
        n, cache = args.parallel_trials, f"paths.cache={tmp / 'overhead-heavy' / 'cache'}"
        joblib = ["hydra/launcher=joblib", "hydra.sweeper.n_jobs={n}", "hydra.launcher.n_jobs={n}"]
        walls, spans = {}, {}
        for label, extra in (("basic launcher", []),
                             ("1 joblib worker", [a.format(n=1) for a in joblib]),
                             ("2 joblib workers", [a.format(n=2) for a in joblib]),
                             ("2 fresh joblib workers", [*(a.format(n=2) for a in joblib),
                                                         "hydra.sweeper.fork_workers=false"])):
            study = "workers-" + label.replace(" ", "_")
            walls[label] = sweep(tmp, study, n, cache, *args.heavy, *extra)
            span = spans[label] = span_seconds(children(tmp, study))
            print(f"{n} trials ({' '.join(args.heavy)}), {label}: {60 * n / walls[label]:.2f} "
                  f"trials/min ({walls[label]:.1f}s; first trial start to last end {span:.1f}s)")
        ratio = walls["1 joblib worker"] / walls["2 joblib workers"]
        basic = walls["basic launcher"] / walls["2 joblib workers"]
        steady = spans["1 joblib worker"] / spans["2 joblib workers"]
        print(f"2 joblib workers vs 1: {ratio:.2f}x the trials per minute over the whole command, "
              f"{steady:.2f}x first trial to last (target >= 1.7x: "
              f"{'met' if ratio >= 1.7 else 'NOT met'}); vs the basic launcher {basic:.2f}x")
        fresh = walls["2 fresh joblib workers"] / walls["2 joblib workers"]
        print(f"2 workers forked from the sweep vs started as fresh interpreters "
              f"(fork_workers=false): {fresh:.2f}x the trials per minute")
        model = next((a.split("=", 1)[1] for a in args.heavy if a.startswith("model=")), "mlp")
        ceiling(model)


if __name__ == "__main__":
    main()
