"""Mixed precision against uniform low-bit at the same average bits per weight.

For each budget B: uniform `quantization=lowbit quantization.bits=B` (every layer at B bits) and
mixed `quantization.allocation=sensitivity quantization.budget_bits=B` (per-layer widths from
{2, 4, 8, 32} chosen by the greedy over the cached sensitivity pass). Same baseline per seed,
post-training (no QAT), weight-only; test and val accuracy of the reloaded artifact, its stored
bits per weight (`weight_bits`) and file bytes, side by side.

Run: python benchmarks/mixed_precision.py [--seeds 3] [--budgets 3,4] [extra overrides ...]
     e.g. python benchmarks/mixed_precision.py --seeds 1 model=lenet5
          python benchmarks/mixed_precision.py model=mlp data=fashion_mnist train=fashion
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from compression.config.run import CONFIG_DIR
from compression.run import pipeline

METRICS = ("accuracy", "val_accuracy", "weight_bits", "size_bytes", "baseline_accuracy")


def measure(overrides: list[str]) -> dict[str, float]:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, f"objectives=[{','.join(METRICS)}]"])
    GlobalHydra.instance().clear()
    return dict(zip(METRICS, pipeline.run(cfg), strict=True))


def cases(budget: float, choices: str) -> dict[str, list[str]]:
    out = {}
    if float(budget).is_integer() and 2 <= budget <= 8:
        out[f"uniform {budget:g}-bit"] = ["quantization=lowbit", f"quantization.bits={budget:g}"]
    out[f"mixed <= {budget:g} bits"] = [
        "quantization=lowbit", "quantization.allocation=sensitivity",
        f"quantization.budget_bits={budget:g}", f"quantization.bit_choices={choices}"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--budgets", type=lambda t: [float(b) for b in t.split(",")],
                   default=[3.0, 4.0], help="average bits per weight, comma separated")
    p.add_argument("--choices", default="[2,4,8,32]", help="bit_choices of the mixed runs")
    p.add_argument("overrides", nargs="*", help="e.g. model=lenet5 data=fashion_mnist")
    args = p.parse_args()
    rows: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = [*args.overrides, "tracking.enabled=false", "measure.latency=false",
                f"paths.cache={Path(tmp) / 'cache'}", f"paths.artifacts={Path(tmp) / 'a'}"]
        for seed in range(args.seeds):
            for budget in args.budgets:
                for name, overrides in cases(budget, args.choices).items():
                    r = measure([*base, *overrides, f"seed={seed}"])
                    rows.setdefault(name, []).append(r)
                    print(f"seed {seed} {name}: " + " ".join(
                        f"{k} {v:.4g}" for k, v in r.items()), flush=True)
    first = next(iter(rows.values()))
    print(f"\n{' '.join(args.overrides) or 'defaults'}, {args.seeds} seed(s), post-training; "
          f"fp32 baseline test accuracy {_ms(first, 'baseline_accuracy', 100)}%")
    print("| case | test accuracy | val accuracy | bits/weight | size bytes |")
    print("|---|---|---|---|---|")
    for name, runs in rows.items():
        print(f"| {name} | {_ms(runs, 'accuracy', 100)}% | {_ms(runs, 'val_accuracy', 100)}% | "
              f"{_ms(runs, 'weight_bits', fmt='.3f')} | {_ms(runs, 'size_bytes', fmt='.0f')} |")


def _ms(runs: list[dict[str, float]], key: str, scale: float = 1.0, fmt: str = ".2f") -> str:
    """mean ± standard deviation over the seeds"""
    values = [scale * r[key] for r in runs]
    sd = f" ± {statistics.stdev(values):{fmt}}" if len(values) > 1 else ""
    return f"{statistics.mean(values):{fmt}}{sd}"


if __name__ == "__main__":
    main()
