"""Magnitude vs Wanda vs SparseGPT on the tiny ViT or the character LM, at 50% unstructured and
2:4, without and with fine-tuning, over seeds; then fp32 vs dynamic int8 latency at batch 1 and N.

    python benchmarks/transformers.py [--model vit|charlm] [--data digits] [--seeds 0 1 2]
                                      [--finetune 2] [--threads 1] [--batch 256] [--repeats 200]
                                      [--no-latency] [--latency-only] [overrides...]

The quality figure is the run's metric: test accuracy for the ViT, test perplexity (lower is
better) for `--model charlm` (data=text by default).

Each seed trains (or loads from the cache) its own dense baseline with the project's real config
(conf/, plus any Hydra-style overrides, e.g. train.epochs=10); every method prunes a copy of it
through the same handlers and Session a run uses (calibration: pruning's default 8 training
batches) and is scored on the test split. Latency: the two models' calls interleaved in one
process (metrics.latency_side_by_side), CPU time of the calling thread, median.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from compression.analysis.profile import compose_run_config
from compression.data import DataSpec, Splits, load
from compression.measure import latency_side_by_side
from compression.pruning import PRUNERS
from compression.quantization import QUANTIZERS
from compression.run.session import Session
from compression.training.baseline import get_baseline
from compression.training.loop import evaluate

METHODS: dict[str, list[str]] = {  # label -> pruning overrides
    "magnitude 50%": ["pruning=unstructured"],
    "wanda 50%": ["pruning=unstructured", "pruning.criterion=wanda"],
    "sparsegpt 50%": ["pruning=sparsegpt"],
    "magnitude 2:4": ["pruning=nm"],
    "wanda 2:4": ["pruning=nm", "pruning.criterion=wanda"],
    "sparsegpt 2:4": ["pruning=sparsegpt", "pruning.pattern=nm", "pruning.sparsity=null"],
}


def accuracies(base: list[str], seed: int, finetune: int
               ) -> tuple[dict[str, float], torch.nn.Module, Splits]:
    rc = compose_run_config([*base, f"seed={seed}"])
    splits = load(rc.data)
    baseline = get_baseline(rc.model, rc.data, rc.train, seed, splits, rc.paths.cache_dir,
                            rc.metric)
    metric = None if rc.metric.is_default else rc.metric.fn()
    out = {"dense": baseline.accuracy}
    for label, overrides in METHODS.items():
        for ft in sorted({0, finetune}):  # --finetune 0: the no-fine-tuning column only
            rc = compose_run_config([*base, f"seed={seed}", f"finetune.epochs={ft}", *overrides])
            torch.manual_seed(seed)
            model = copy.deepcopy(baseline.model)
            PRUNERS.get(rc.pruning.method).handler(model, rc.pruning, Session(rc, splits))
            out[f"{label} ft{ft}"] = evaluate(model, splits.test_x, splits.test_y,
                                              metric=metric)
    return out, baseline.model, splits


def latency(model: torch.nn.Module, spec: DataSpec, batch: int, repeats: int) -> None:
    int8 = QUANTIZERS.build_config({"mode": "dynamic_int8"})
    q = QUANTIZERS.get("dynamic_int8").handler.quantize(model.eval(), int8, None).model
    print(f"\ndynamic int8 (engine {int8.engine}) vs fp32, {type(model).__name__} on "
          f"{spec.name}, threads={torch.get_num_threads()}")
    print("| batch | fp32 ms | int8 ms | fp32/int8 |\n|---|---|---|---|")
    for b, n in ((1, repeats), (batch, max(20, repeats // 5))):
        x = (torch.randint(0, spec.num_classes, (b, *spec.input_shape)).float() if spec.sequence
             else torch.randn(b, *spec.input_shape))  # byte values / images
        lat = latency_side_by_side({"fp32": (model, x), "int8": (q, x)}, 10, n,
                                   clock=time.thread_time_ns)
        a, c = lat["fp32"].median_ms, lat["int8"].median_ms
        print(f"| {b} | {a:.3f} | {c:.3f} | {a / c:.2f}x |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vit", choices=["vit", "charlm"])
    p.add_argument("--data", default=None, help="default: digits for vit, text for charlm")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--finetune", type=int, default=2, help="fine-tuning epochs of the ft runs")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--no-latency", action="store_true",
                   help="accuracy only (for a run under nice, where timings mean nothing)")
    p.add_argument("--latency-only", action="store_true",
                   help="the int8 timing alone, on the first seed's (cached) baseline")
    p.add_argument("overrides", nargs="*", help="Hydra-style overrides, e.g. train.epochs=10")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    args.data = args.data or ("text" if args.model == "charlm" else "digits")
    base = [f"model={args.model}", f"data={args.data}", *args.overrides]
    t0 = time.perf_counter()
    if args.latency_only:
        rc = compose_run_config([*base, f"seed={args.seeds[0]}"])
        splits = load(rc.data)
        baseline = get_baseline(rc.model, rc.data, rc.train, args.seeds[0], splits,
                                rc.paths.cache_dir, rc.metric)
        latency(baseline.model, splits.spec, args.batch, args.repeats)
        return
    runs = []
    for seed in args.seeds:
        acc, model, splits = accuracies(base, seed, args.finetune)
        runs.append(acc)
        print(f"seed {seed}: " + ", ".join(f"{k} {v:.4f}" for k, v in acc.items()), flush=True)
    what = "perplexity (lower is better)" if args.data == "text" else "accuracy"
    print(f"\n{args.model} on {args.data}, test {what}, mean ± std over seeds {args.seeds} "
          f"(ft{args.finetune}: {args.finetune} fine-tuning epochs; overrides {base})")
    print(f"| method | no fine-tuning | {args.finetune} fine-tuning epochs |\n|---|---|---|")

    def cell(key: str) -> str:
        xs = [r[key] for r in runs]
        sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
        return f"{statistics.mean(xs):.4f} ± {sd:.4f}"

    print(f"| dense | {cell('dense')} | |")
    for label in METHODS:
        tuned = cell(f"{label} ft{args.finetune}") if args.finetune else "-"
        print(f"| {label} | {cell(f'{label} ft0')} | {tuned} |")
    if not args.no_latency:
        latency(model, splits.spec, args.batch, args.repeats)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
