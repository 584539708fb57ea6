"""The report's steps that collect and derive its data: each takes one `Analysis`, writes its
CSV tables and figures, and records the Markdown text of its section.

Rendering the pages and logging them to MLflow are elsewhere (`render`, `publish`); which steps
a command runs is in `pipeline`.
"""

from __future__ import annotations

import pandas as pd
from mlflow.exceptions import MlflowException

from compression.analysis import autotune as at
from compression.analysis import autotune_plots, plots, runtimes, tables
from compression.analysis import layers as L
from compression.analysis.curves import X_AXES, aggregate_curves, baseline_level, curve_auc
from compression.analysis.pareto import FRONTS, oriented, pareto_mask
from compression.analysis.report.analysis import Analysis
from compression.analysis.sweet_spot import sweet_spot
from compression.core.errors import ArtifactError, ConfigError
from compression.training import quality


def runs_csv(a: Analysis) -> None:
    a.table(a.frame, "runs")
    a.text["runs"] = (f"{a.runs.summary()}.\n\nAll columns of every run: `runs.csv`.\n\n"
                      + tables.markdown(tables.brief(a.frame)))


def curves(a: Analysis) -> None:
    runs = a.frame[a.frame["single_layer"].isna()]  # single-layer runs: the sensitivity chart
    sections = []
    for name, (col, x_label, log_x) in X_AXES.items():
        table = aggregate_curves(runs, col)
        if table.empty:
            continue
        auc = curve_auc(table, log_x=log_x)
        a.table(table.drop(columns="config_key"), f"curve_{name}")
        a.table(auc, f"auc_{name}")
        fig = plots.curves(table, auc, x_column=col, x_label=x_label, log_x=log_x,
                           baseline=a.baseline,
                           tolerance=a.opts.tolerance,
                           title=f"Accuracy vs {x_label.split(' (')[0]}", metric=a.metric)
        a.figure(fig, f"curve_{name}", f"Accuracy vs {x_label}; mean over seeds with +-1 std.",
                 "curves")
        sections.append(f"Area under each curve (x: {x_label}; each over its own x range, so "
                        "compare series by `mean_y`, the area divided by the range):\n\n"
                        + tables.markdown(auc))
    a.text["curves"] = "\n\n".join(sections)


PAIR = ("model.name", "data.name")  # runs of different pairs never share a front


def _pairs(frame: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(title, runs) per (model, data) pair in the selection: one panel each."""
    if not all(c in frame for c in PAIR):
        return [("", frame)]
    return [(f"{m} on {d}", g) for (m, d), g in frame.groupby(list(PAIR), sort=True)]


def pareto(a: Analysis) -> None:
    """Both fronts, each marking the sweet spot and knee by its own x (size, latency); one panel
    (front, baseline, sweet spot, knee) per (model, data) pair, never a blend of them."""
    sections = []
    for name, objectives in FRONTS.items():
        x = objectives[0].column
        if x not in a.frame or a.frame[x].isna().all():
            sections.append(f"No `{x}` logged: no accuracy-vs-{name} front.")
            continue
        panels, fronts, spots = [], [], []
        for title, runs in _pairs(a.frame):
            mask = pareto_mask(runs, oriented(objectives, quality.direction_of(runs)))
            spot = sweet_spot(runs, a.opts.tolerance, name, a.opts.select_on)
            best = None if spot.best is None else {**spot.best, "selected_on": spot.selected_on}
            panels.append(plots.ParetoPanel(title, runs, mask, best, spot.knee,
                                            baseline_level(runs)))
            fronts.append(runs[mask].sort_values(x))
            spots.append(spot)
        front = pd.concat(fronts)
        a.table(front, f"pareto_{name}")
        what = plots.AXIS_LABELS[x].split(" (")[0].split(",")[0]
        fig = plots.pareto(panels, objectives, tolerance=a.opts.tolerance, metric=a.metric,
                           title=f"Accuracy vs {what}: Pareto front")
        per = " per model and data set" if len(panels) > 1 else ""
        a.figure(fig, f"pareto_{name}", f"Accuracy vs {what}{per}: the front in red, dominated "
                 f"runs faint, the sweet spot by {name} (star; qualified on "
                 f"{spots[0].selected_on} accuracy, so it may sit outside the test tolerance "
                 "band) and the knee (diamond) marked.", "pareto")
        sections.append(f"Pareto set, accuracy vs `{x}` ({len(front)} runs, "
                        f"`pareto_{name}.csv`):\n\n" + tables.markdown(tables.brief(front)))
    a.text["pareto"] = "\n\n".join(sections)


def runtime(a: Analysis) -> None:
    """Eager and deployment-runtime figures side by side, for runs that have both."""
    if not runtimes.has_runtime(a.frame):
        return
    table = runtimes.side_by_side(a.frame)
    a.table(table, "runtime_vs_eager")
    fig = runtimes.speedup_figure(table, "Speed-up over fp32: eager vs deployment runtime")
    a.figure(fig, "runtime_speedup", "Each run's speed-up over its fp32 baseline, timed "
             "interleaved in the same engine: PyTorch eager vs the deployment runtime.",
             "runtime")
    a.text["runtime"] = ("Eager and runtime figures of each run (`runtime_vs_eager.csv`):\n\n"
                         + tables.markdown(table.drop(columns="run_id")))


def sweet(a: Analysis) -> None:
    a.sweet = sweet_spot(a.frame, a.opts.tolerance, a.opts.by, a.opts.select_on)
    a.tables[f"sweet_spot_{a.opts.by}"] = a.sweet.to_json(a.opts.out / a.sweet.filename)
    print(quality.relabel(a.sweet.table(), a.metric))
    pairs = len(_pairs(a.frame))
    note = (f"\n\n- note: the selection holds {pairs} (model, data) pairs and this sweet spot "
            "is chosen among all of them; the Pareto fronts below have one panel each"
            if pairs > 1 else "")
    a.text["sweet_spot"] = a.sweet.markdown() + note


def sensitivity(a: Analysis) -> None:
    table = L.sensitivity_table(a.frame)
    if table.empty:
        return
    a.table(table, "layer_sensitivity")
    fig = plots.sensitivity(table, baseline=a.baseline, tolerance=a.opts.tolerance,
                            title="Per-layer sensitivity: accuracy when pruning one layer",
                            metric=a.metric)
    a.figure(fig, "layer_sensitivity", "Accuracy against the sparsity of the one layer pruned.",
             "sensitivity")
    a.text["sensitivity"] = tables.markdown(table)


def layers(a: Analysis) -> None:
    """Per-layer views of one run: --run (its files named after it, so the sweet spot's stay),
    else the sweet spot."""
    if a.opts.run_id:
        run_id = _selected_run(a, a.opts.run_id)
        suffix = f"_{run_id[:8]}"
    else:
        best = (a.sweet or sweet_spot(a.frame, a.opts.tolerance, a.opts.by,
                                       a.opts.select_on)).best
        run_id, suffix = (best["run_id"] if best else None), ""
    if not run_id:
        a.text["layers"] = "No run to show per layer (no sweet spot; pass --run)."
        return
    client = a.client()
    layer_table = L.run_layers(client, run_id)
    label = _run_label(a, run_id)
    try:
        weights = L.layer_weights(L.run_model(client, run_id, a.opts.model))
    except ArtifactError as e:
        if a.opts.run_id:
            raise  # asked for this run: its one-line refusal is the answer
        print(f"note: no weight histograms: {e}")
        weights = {}
    layer_views(a, layer_table, weights, label, suffix)
    a.text["layers"] = f"Run `{run_id}` ({label}):\n\n" + tables.markdown(layer_table)


def _selected_run(a: Analysis, wanted: str) -> str:
    """The one selected finished run whose id is `wanted` or starts with it."""
    ids = a.frame["run_id"].tolist() if "run_id" in a.frame else []
    found = [i for i in ids if i.startswith(wanted)]
    if len(found) != 1:
        what = "matches none" if not found else f"matches {len(found)}"
        raise ConfigError(f"--run {wanted} {what} of the {len(ids)} selected finished runs; give "
                          "a run id (or a unique prefix) from the selection")
    return found[0]


def _run_label(a: Analysis, run_id: str) -> str:
    match = a.frame[a.frame["run_id"] == run_id] if len(a.frame) else a.frame
    return str(match["label"].iloc[0]) if len(match) else run_id[:8]


def layer_views(a: Analysis, layer_table: pd.DataFrame, weights: dict, label: str,
                suffix: str = "") -> None:
    a.table(layer_table, f"layers{suffix}")
    a.figure(plots.layer_bars(layer_table, f"Parameters and bytes per layer: {label}"),
             f"layer_bars{suffix}", "Parameters and bytes per layer.", "layers")
    a.figure(plots.layer_sparsity(layer_table, f"Sparsity per layer: {label}"),
             f"layer_sparsity{suffix}", "Share of exactly-zero weights per layer.", "layers")
    if weights:  # none when the run's model could not be loaded safely
        a.figure(plots.weight_histograms(weights, f"Weight distribution per layer: {label}"),
                 f"weight_histograms{suffix}",
                 "Histograms of the nonzero weights of each layer.", "layers")


def autotune(a: Analysis) -> None:
    """An autotune sweep's page: the winner and its command, its per-layer allocation, the search
    trace, and the winner beside the best uniform-allocation trial. Nothing for other sweeps."""
    client = a.client()
    if not at.is_autotune(client, a.runs.parent_run_id):
        return
    tune = at.load(client, a.runs.parent_run_id)
    t = tune.target
    a.tables["autotune_trace"] = at.write_trace(tune, a.opts.out / "autotune_trace.csv")
    fig = autotune_plots.search_trace(
        tune.trials, metric=t.metric, minimize=t.minimize, drop_metric=t.drop_metric,
        max_drop=t.max_drop, winner=tune.winner_trial, title="Autotune search trace")
    a.figure(fig, "autotune_trace", f"`{t.metric}` of every trial; the line is the best within "
             f"the target ({t.drop_metric} <= {t.max_drop:g}) so far; PRUNED and FAILED trials "
             "marked along the bottom.", "autotune")
    parts = [at.winner_text(tune, a.frame)]
    run_id = tune.winner_run
    if run_id is not None:
        try:
            measured = L.run_layers(client, run_id)
        except (MlflowException, OSError):
            measured = None
        alloc = at.allocation(client, run_id, measured)
        if len(alloc):
            a.table(alloc, "autotune_allocation")
            row = a.frame[a.frame["run_id"] == run_id] if "run_id" in a.frame else a.frame
            uniform = (float(row["pruning.sparsity"].iloc[0]) if len(row)
                       and "pruning.sparsity" in row and pd.notna(row["pruning.sparsity"].iloc[0])
                       else None)
            a.figure(autotune_plots.allocation_bars(
                alloc, uniform=uniform, title=f"Winner's allocation: trial {tune.winner_trial}"),
                "autotune_allocation", f"The winner's sparsity per layer "
                f"({alloc.attrs.get('source', '')})" + (" and bits per layer" if "bits" in alloc
                                                        else "") + "; dashed: the same budget "
                "spread uniformly.", "autotune")
    rivals = at.rivals(a.frame, tune)
    if len(rivals):
        cols = ["role", *[c for c in tables.BRIEF if c in rivals and c != "run_id"]]
        a.table(rivals, "autotune_vs_uniform")
        parts.append("The winner against uniform allocation (best trial within the target "
                     "with every layer at one sparsity; `autotune_vs_uniform.csv`):\n\n"
                     + tables.markdown(rivals[cols]))
    a.text["autotune"] = "\n\n".join(parts)
