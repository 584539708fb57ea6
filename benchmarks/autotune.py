"""How fast does each search find "the largest compression within 1 point"? Side by side, on one
space (unstructured sparsity x {fp32, dynamic int8, 4-bit, 8-bit weight-only}):

- grid: every point of a sparsity_curve-style grid (7 sparsities x 4 modes = 28 trials);
- fixed step (NNCF's accuracy-aware style): per mode, sparsity from 0.5 up by 0.1, the step
  halved on every failure down to 0.025;
- autotune: `python train.py sweep=autotune` on the same space (TPE, constraint on the val
  drop, patience), its search space narrowed to match.

Feasible = validation accuracy drop <= --max-drop (what a search may look at; the test drop of
each winner is printed too). Per seed and search: trials run (every trial autotune's study
holds, whatever its state), wall seconds, best compression ratio, trials and seconds until the
search first reached its own best and until it first reached the grid's best, and the best ratio
reached within autotune's wall time. Target: autotune at least as compressed as the grid's best
with at most a third of its trials (mean over seeds): autotune's budget defaults to a third of the
grid (9 of 28), so every trial it runs counts.

Run: python benchmarks/autotune.py [--seeds 3] [--max-drop 0.01] [--searches ...] [overrides ...]
     default overrides: model=mlp data=fashion_mnist train=fashion (lenet5: model=lenet5)
     quick look: python benchmarks/autotune.py --seeds 1 data=digits train=default
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402

from compression.config.run import CONFIG_DIR  # noqa: E402
from compression.run import pipeline  # noqa: E402
from compression.sweep.study import make_storage  # noqa: E402

MODES = {"fp32": ["quantization=none"], "int8": ["quantization=dynamic_int8"],
         "4-bit": ["quantization=lowbit", "quantization.bits=4"],
         "8-bit": ["quantization=lowbit", "quantization.bits=8"]}
GRID = (0.5, 0.75, 0.875, 0.9, 0.9375, 0.95, 0.96875)
DEFAULT = ["model=mlp", "data=fashion_mnist", "train=fashion"]
OBJECTIVES = "objectives=[compression_ratio,val_accuracy_drop,accuracy_drop]"


@dataclass
class Search:
    name: str
    trials: list[tuple[float, float, float, float]] = field(default_factory=list)  # t, ratio,
    # val drop, test drop (t: seconds since the search started, at the trial's end)
    n_run: int | None = None  # trials the search ran, when some have no ratio (failed, pruned)

    @property
    def n(self) -> int:
        return len(self.trials) if self.n_run is None else self.n_run

    def best(self, max_drop: float, until: float = float("inf")) -> tuple[float, float]:
        """(best feasible ratio, its test drop) among trials finished by `until` seconds."""
        ok = [(r, td) for t, r, vd, td in self.trials if vd <= max_drop and t <= until]
        return max(ok, default=(float("nan"), float("nan")))

    def reached(self, max_drop: float) -> tuple[int, float]:
        """(trials, seconds) until the search first held its own best."""
        ratio, _ = self.best(max_drop)
        for i, (t, r, vd, _) in enumerate(self.trials, 1):
            if vd <= max_drop and r == ratio:
                return i, t
        return len(self.trials), self.trials[-1][0] if self.trials else 0.0

    def reached_ratio(self, max_drop: float, ratio: float) -> tuple[float, float]:
        """(trials, seconds) until a feasible trial first reached `ratio`; NaN if none did."""
        for i, (t, r, vd, _) in enumerate(self.trials, 1):
            if vd <= max_drop and r >= ratio:
                return i, t
        return float("nan"), float("nan")


def run(overrides: list[str]) -> tuple[float, float, float]:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, OBJECTIVES])
    GlobalHydra.instance().clear()
    return pipeline.run(cfg)  # type: ignore[return-value]


def grid(base: list[str], modes: list[str]) -> Search:
    s, t0 = Search("grid"), time.perf_counter()
    for mode in (MODES[m] for m in modes):
        for sparsity in GRID:
            ratio, vd, td = run([*base, "pruning=unstructured", f"pruning.sparsity={sparsity}",
                                 *mode])
            s.trials.append((time.perf_counter() - t0, ratio, vd, td))
    return s


def fixed_step(base: list[str], max_drop: float, modes: list[str]) -> Search:
    s, t0 = Search("fixed step"), time.perf_counter()
    for mode in (MODES[m] for m in modes):
        sparsity, step = 0.5, 0.1
        while step >= 0.025 and sparsity < 0.995:
            ratio, vd, td = run([*base, "pruning=unstructured", f"pruning.sparsity={sparsity}",
                                 *mode])
            s.trials.append((time.perf_counter() - t0, ratio, vd, td))
            if vd <= max_drop:
                sparsity = round(sparsity + step, 4)
            else:
                sparsity, step = round(sparsity - step / 2, 4), step / 2
    return s


def autotune(base: list[str], tmp: Path, seed: int, max_drop: float, n_trials: int) -> Search:
    # the preset's space narrowed to the benchmark's (its per-layer allocation kept: part of
    # what autotune searches that a grid over one global sparsity does not)
    space = ("+hydra.sweeper.params={pruning: 'choice(unstructured)', pruning.sparsity: "
             "'interval(0.5,0.99)', pruning.allocation: 'uniform,sensitivity', quantization: "
             "'none,dynamic_int8,lowbit', quantization.bits: '4,8'}")
    study = f"autotune-bench-{seed}"
    # the preset's space and conditions replaced, not merged into (its mixed-precision keys
    # would otherwise stay in the space)
    cmd = [sys.executable, "train.py", "sweep=autotune", *base, "~hydra.sweeper.params", space,
           "~hydra.sweeper.when", "+hydra.sweeper.when={quantization.bits: {quantization: "
           "[lowbit]}}",
           f"target.max_drop={max_drop}", f"hydra.sweeper.n_trials={n_trials}",
           f"hydra.sweeper.study_name={study}", f"hydra.sweeper.seed={seed}",
           f"hydra.sweeper.storage={tmp / 'optuna.journal'}", f"hydra.sweep.dir={tmp / study}",
           "tracking.enabled=true",
           f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}"]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"autotune failed:\n{out.stderr[-3000:]}")
    wall = time.perf_counter() - t0
    trials = optuna.load_study(study_name=study,
                               storage=make_storage(str(tmp / "optuna.journal"))).trials
    s = Search("autotune", n_run=len(trials))  # every trial it ran counts, whatever its state
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}")
    exp = client.get_experiment_by_name("compression")
    runs = {r.data.tags.get("trial_number"): r for r in client.search_runs(
        [exp.experiment_id], f"tags.study_name = '{study}'", max_results=1000)}
    for t in sorted(trials, key=lambda t: t.number):
        r = runs.get(str(t.number))
        if r is None or r.info.status != "FINISHED" or t.datetime_complete is None:
            continue
        m = r.data.metrics
        at = (t.datetime_complete.timestamp() - trials[0].datetime_start.timestamp())
        s.trials.append((at, m["compression_ratio"], m["val_accuracy_drop"], m["accuracy_drop"]))
    s.wall = wall  # type: ignore[attr-defined]
    return s


SEARCHES = ("autotune", "grid", "fixed step")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. +seeds-1 "
                   "(to run seeds as separate processes)")
    p.add_argument("--max-drop", type=float, default=0.01)
    p.add_argument("--autotune-trials", type=int, default=len(GRID) * len(MODES) // 3,
                   help="autotune's budget (default: a third of the grid, %(default)s)")
    p.add_argument("--autotune-args", default="", help="extra overrides of the autotune sweep "
                   "only, space-separated, e.g. \"target.first_trials=[] "
                   "hydra.sweeper.sampler_kwargs={}\" (the search as it was before its prior)")
    p.add_argument("--searches", default=",".join(SEARCHES),
                   help="which searches to run (default: %(default)s)")
    p.add_argument("--modes", default=",".join(MODES), help="grid / fixed step: these modes "
                   "only (default: all); --save of the parts, combined, is the whole search run "
                   "one part after another (times added up)")
    p.add_argument("--cache", type=Path, help="baseline cache shared by processes (default: a "
                   "temporary folder)")
    p.add_argument("--save", type=Path, help="append each search's trials to this JSON-lines "
                   "file as it ends (seeds or searches run as separate processes)")
    p.add_argument("--combine", type=Path, nargs="+", help="print the table of saved files "
                   "instead of running anything")
    p.add_argument("overrides", nargs="*", help=f"default: {' '.join(DEFAULT)}")
    args = p.parse_args()
    if args.combine:
        return report(load_saved(args.combine), args)
    args.modes = [m.strip() for m in args.modes.split(",")]
    if bad := [m for m in args.modes if m not in MODES]:
        sys.exit(f"--modes: unknown {bad[0]!r}; choose from {', '.join(MODES)}")
    chosen = [x.strip() for x in args.searches.split(",")]
    if bad := [x for x in chosen if x not in SEARCHES]:
        sys.exit(f"--searches: unknown {bad[0]!r}; choose from {', '.join(SEARCHES)}")
    results: dict[str, list[Search]] = {name: [] for name in SEARCHES if name in chosen}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            base = [*DEFAULT, *args.overrides, f"seed={seed}", "tracking.enabled=false",
                    "measure.latency=false",  # no search here looks at latency
                    f"paths.cache={args.cache or tmp / 'cache'}", f"paths.artifacts={tmp / 'a'}"]
            run([*base, "pruning=none"])  # the seed's baseline, trained once, untimed
            for name in results:
                search = one_search(name, base, tmp, seed, args)
                results[name].append(search)
                if args.save:
                    with args.save.open("a") as f:
                        f.write(json.dumps({"seed": seed, "name": name, "n_run": search.n_run,
                                            "modes": args.modes, "trials": search.trials})
                                + "\n")
                ratio, test_drop = search.best(args.max_drop)
                n, at = search.reached(args.max_drop)
                print(f"seed {seed} {search.name:<10}: {search.n} trials, best "
                      f"{ratio:.2f}x (test drop {100 * test_drop:+.2f} pt) reached after {n} "
                      f"trials / {at:.0f} s", flush=True)
    report(results, args)


def load_saved(paths: list[Path]) -> dict[str, list[Search]]:
    """Saved searches by name, each list in seed order (a seed lacking a search is dropped
    from every list, so that the searches compare on the same seeds). A search saved in parts
    (--modes) is put together in MODES order, each part's times shifted by the parts before it:
    the search as one process would have run it."""
    rows = [json.loads(line) for path in paths for line in path.read_text().splitlines()]
    parts: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        parts.setdefault((r["name"], r["seed"]), []).append(r)
    by = {}
    for key, rs in parts.items():
        rs.sort(key=lambda r: list(MODES).index(r.get("modes", list(MODES))[0]))
        search, offset = Search(key[0], n_run=None), 0.0
        for r in rs:
            search.trials += [(t + offset, *rest) for t, *rest in r["trials"]]
            offset = search.trials[-1][0] if search.trials else offset
            if r["n_run"] is not None:
                search.n_run = (search.n_run or 0) + r["n_run"]
        covered = sorted(m for r in rs for m in r.get("modes", MODES))
        if key[0] != "autotune" and covered != sorted(MODES):
            print(f"note: {key[0]} seed {key[1]} covers modes {covered} only")
        by[key] = search
    names = [n for n in SEARCHES if any(k[0] == n for k in by)]
    seeds = sorted({s for _, s in by if all((n, s) in by for n in names)})
    return {n: [by[(n, s)] for s in seeds] for n in names}


def one_search(name: str, base: list[str], tmp: Path, seed: int, args: argparse.Namespace
               ) -> Search:
    if name == "grid":
        return grid(base, args.modes)
    if name == "fixed step":
        return fixed_step(base, args.max_drop, args.modes)
    tuned = [*(b for b in base if not b.startswith("tracking.")), *args.autotune_args.split()]
    return autotune(tuned, tmp, seed, args.max_drop, args.autotune_trials)


def report(results: dict[str, list[Search]], args: argparse.Namespace) -> None:
    def mean(xs: list[float]) -> float:
        return statistics.mean(xs) if xs else float("nan")

    n_seeds = len(next(iter(results.values()), []))
    print(f"\n{' '.join([*DEFAULT, *args.overrides])}; feasible: val drop <= "
          f"{100 * args.max_drop:g} pt; mean over {n_seeds} seed(s)")
    print(f"{'search':<11} {'trials':>7} {'best ratio':>11} {'trials to best':>15} "
          f"{'s to best':>10} {'trials to grid best':>20} {'ratio at autotune s':>20}")
    grids = results.get("grid", [])
    tuned = results.get("autotune", [])
    budget = [s.trials[-1][0] if s.trials else 0 for s in tuned] or [float("inf")] * n_seeds
    for name, searches in results.items():
        within = [s.best(args.max_drop, until=b)[0] for s, b in zip(searches, budget,
                                                                   strict=True)]
        to_grid = ([s.reached_ratio(args.max_drop, g.best(args.max_drop)[0])[0]
                    for s, g in zip(searches, grids, strict=True)] if grids else [])
        print(f"{name:<11} {mean([s.n for s in searches]):>7.1f} "
              f"{mean([s.best(args.max_drop)[0] for s in searches]):>10.2f}x "
              f"{mean([s.reached(args.max_drop)[0] for s in searches]):>15.1f} "
              f"{mean([s.reached(args.max_drop)[1] for s in searches]):>10.0f} "
              f"{mean(to_grid):>20.1f} {mean(within):>19.2f}x")
    if not (grids and tuned):
        return
    grid_best = mean([s.best(args.max_drop)[0] for s in grids])
    tuned_best = mean([s.best(args.max_drop)[0] for s in tuned])
    tuned_n = mean([s.n for s in tuned])
    per_seed = sum(t.best(args.max_drop)[0] >= g.best(args.max_drop)[0]
                   for t, g in zip(tuned, grids, strict=True))
    ok = tuned_best >= grid_best and tuned_n <= len(GRID) * len(MODES) / 3
    print(f"target: autotune >= grid's best ({tuned_best:.2f}x vs {grid_best:.2f}x; per seed "
          f"{per_seed} of {len(grids)}) with <= 1/3 of its trials ({tuned_n:.1f} vs "
          f"{len(GRID) * len(MODES)}): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
