"""Turn a selection of runs into files: figures (PNG, SVG, PDF), CSV tables, sweet-spot JSON, a
Markdown and a self-contained HTML report; then log them to the sweep's parent run.

Each step is a function of one `Analysis` that records what it wrote; a command is a list of
steps (COMMANDS), so `report` is just every step in order.
"""

from __future__ import annotations

import base64
import html
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from compression import validation as v
from compression.analysis import layers as L
from compression.analysis import plots, runtimes, tables
from compression.analysis.curves import X_AXES, aggregate_curves, baseline_level, curve_auc
from compression.analysis.derive import derive
from compression.analysis.pareto import FRONTS, pareto_mask
from compression.analysis.runs import RunTable
from compression.analysis.sweet_spot import CRITERIA, DROPS, SweetSpot, sweet_spot
from compression.errors import ConfigError

log = logging.getLogger(__name__)
ARTIFACT_DIR = "analysis"  # folder of the parent run's artifacts holding the analysis


@dataclass
class Options:
    out: Path
    tolerance: float = 0.01  # accuracy drop allowed for the sweet spot: 0.01 = 1 point
    by: str = "size"  # what "most compressed" minimises: a key of CRITERIA
    formats: tuple[str, ...] = plots.FORMATS
    log_to_mlflow: bool = True  # upload the outputs to the sweep's parent run
    run_id: str | None = None  # `layers`: the run to show (default: the sweet spot)
    select_on: str = "val"  # the accuracy drop that qualifies the sweet spot: val or test

    def __post_init__(self) -> None:
        v.in_range("--tolerance", self.tolerance, 0, 1)
        v.one_of("--by", self.by, CRITERIA)
        v.one_of("--select-on", self.select_on, DROPS)
        for f in self.formats:
            v.one_of("--formats", f, plots.FORMATS)


@dataclass
class Figure:
    stem: str
    caption: str
    section: str  # the report section it belongs to (a key of SECTIONS)
    paths: list[Path]


@dataclass
class Analysis:
    runs: RunTable
    opts: Options
    frame: pd.DataFrame = field(init=False)
    figures: dict[str, Figure] = field(default_factory=dict)  # by file stem
    tables: dict[str, Path] = field(default_factory=dict)
    text: dict[str, str] = field(default_factory=dict)  # Markdown sections by name
    sweet: SweetSpot | None = None

    def __post_init__(self) -> None:
        self.frame = derive(self.runs.frame) if len(self.runs.frame) else self.runs.frame

    @property
    def fig_dir(self) -> Path:
        return self.opts.out / "figures"

    def figure(self, fig: plots.Figure, stem: str, caption: str, section: str) -> None:
        paths = plots.save_figure(fig, self.fig_dir, stem, self.opts.formats)
        self.figures[stem] = Figure(stem, caption, section, paths)

    def table(self, frame: pd.DataFrame, stem: str) -> Path:
        path = self.opts.out / f"{stem}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False)
        self.tables[stem] = path
        return path

    def written(self) -> list[Path]:
        """The files this analysis wrote (the folder may hold older ones of other commands)."""
        return sorted({*self.tables.values(), *(p for f in self.figures.values()
                                                for p in f.paths)})

    @property
    def baseline(self) -> float | None:
        return baseline_level(self.frame)

    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.runs.uri)


# ---------------------------------------------------------------------------- steps
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
                           title=f"Accuracy vs {x_label.split(' (')[0]}")
        a.figure(fig, f"curve_{name}", f"Accuracy vs {x_label}; mean over seeds with +-1 std.",
                 "curves")
        sections.append(f"Area under each curve (x: {x_label}; each over its own x range, so "
                        "compare series by `mean_y`, the area divided by the range):\n\n"
                        + tables.markdown(auc))
    a.text["curves"] = "\n\n".join(sections)


def pareto(a: Analysis) -> None:
    """Both fronts, each marking the sweet spot and knee by its own x (size, latency)."""
    sections = []
    for name, objectives in FRONTS.items():
        x = objectives[0].column
        if x not in a.frame or a.frame[x].isna().all():
            sections.append(f"No `{x}` logged: no accuracy-vs-{name} front.")
            continue
        mask = pareto_mask(a.frame, objectives)
        front = a.frame[mask].sort_values(x)
        a.table(front, f"pareto_{name}")
        spot = sweet_spot(a.frame, a.opts.tolerance, name, a.opts.select_on)
        what = plots.AXIS_LABELS[x].split(" (")[0]
        fig = plots.pareto(a.frame, mask, objectives, sweet=spot.best, knee=spot.knee,
                           baseline=a.baseline, tolerance=a.opts.tolerance,
                           title=f"Accuracy vs {what}: Pareto front")
        a.figure(fig, f"pareto_{name}", f"Accuracy vs {what}: the front in red, dominated runs "
                 f"faint, the sweet spot by {name} (star; qualified on {spot.selected_on} "
                 "accuracy, so it may sit outside the test tolerance band) and the knee "
                 "(diamond) marked.", "pareto")
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
    a.tables["sweet_spot"] = a.sweet.to_json(a.opts.out / "sweet_spot.json")
    print(a.sweet.table())
    a.text["sweet_spot"] = f"```\n{a.sweet.table()}\n```"


def sensitivity(a: Analysis) -> None:
    table = L.sensitivity_table(a.frame)
    if table.empty:
        return
    a.table(table, "layer_sensitivity")
    fig = plots.sensitivity(table, baseline=a.baseline, tolerance=a.opts.tolerance,
                            title="Per-layer sensitivity: accuracy when pruning one layer")
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
    layer_views(a, layer_table, L.layer_weights(L.run_model(client, run_id)), label, suffix)
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
    a.figure(plots.weight_histograms(weights, f"Weight distribution per layer: {label}"),
             f"weight_histograms{suffix}", "Histograms of the nonzero weights of each layer.",
             "layers")


def markdown_report(a: Analysis) -> None:
    path = a.opts.out / "report.md"
    path.write_text(render_markdown(a))
    a.tables["report_md"] = path


def html_report(a: Analysis) -> None:
    path = a.opts.out / "report.html"
    path.write_text(render_html(a))
    a.tables["report_html"] = path


def log_to_parent(a: Analysis) -> None:
    """Upload everything written so far to the sweep's parent run, beside its runs in the UI."""
    parent = a.runs.parent_run_id
    if not a.opts.log_to_mlflow:
        return
    if not parent:
        print("not logged to MLflow: the selection is not a sweep (no parent run)")
        return
    client = a.client()
    files = a.written()
    for path in files:  # only this command's files: the folder may hold older ones
        folder = path.parent.relative_to(a.opts.out).as_posix()
        client.log_artifact(parent, str(path),
                            ARTIFACT_DIR if folder == "." else f"{ARTIFACT_DIR}/{folder}")
    print(f"logged to MLflow: run {parent}, {len(files)} files in artifacts/{ARTIFACT_DIR}/")


# ---------------------------------------------------------------------------- rendering
SECTIONS = (("runs", "Runs"), ("sweet_spot", "Sweet spot"), ("curves", "Accuracy curves"),
            ("pareto", "Pareto fronts"), ("runtime", "Eager vs deployment runtime"),
            ("sensitivity", "Per-layer sensitivity"),
            ("layers", "Per-layer view of the chosen run"))


def _sections(a: Analysis) -> Iterator[tuple[str, str, list[Figure]]]:
    """(key, title, figures) of each section that has figures or text, in report order."""
    for key, title in SECTIONS:
        figs = [f for f in a.figures.values() if f.section == key]
        if figs or key in a.text:
            yield key, title, figs


def render_markdown(a: Analysis) -> str:
    out = ["# Compression analysis", f"Selection: `{a.opts.out.name}`; tolerance "
           f"{a.opts.tolerance * 100:g} accuracy points; sweet spot by {a.opts.by}."]
    for key, title, figs in _sections(a):
        out.append(f"## {title}")
        for f in figs:
            rel = {p.suffix[1:]: p.relative_to(a.opts.out).as_posix() for p in f.paths}
            links = ", ".join(f"[{ext}]({r})" for ext, r in rel.items())
            img = rel.get("png") or next(iter(rel.values()))
            out.append(f"![{f.caption}]({img})\n\n*{f.caption}* ({links})")
        if key in a.text:
            out.append(a.text[key])
    return "\n\n".join(out) + "\n"


def _img_tag(paths: list[Path], caption: str) -> str:
    png = next((p for p in paths if p.suffix == ".png"), None)
    if png is None:
        return ""
    data = base64.b64encode(png.read_bytes()).decode()
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def render_html(a: Analysis) -> str:
    """The same content, figures embedded as data URIs: one file to mail or attach."""
    body = [f"<h1>Compression analysis</h1><p>Selection <code>{html.escape(a.opts.out.name)}"
            f"</code>; tolerance {a.opts.tolerance * 100:g} accuracy points.</p>"]
    for key, title, figs in _sections(a):
        body.append(f"<h2>{html.escape(title)}</h2>")
        body += [_img_tag(f.paths, f.caption) for f in figs]
        if key in a.text:
            body.append(f"<pre>{html.escape(a.text[key])}</pre>")
    style = ("body{font-family:sans-serif;max-width:1250px;margin:auto}img{max-width:100%}"
             "pre{font-size:12px;overflow-x:auto;background:#f6f6f6;padding:8px}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Compression analysis"
            f"</title><style>{style}</style></head><body>{''.join(body)}</body></html>\n")


Step = Callable[[Analysis], None]
COMMANDS: dict[str, list[Step]] = {
    "curves": [curves, log_to_parent],
    "pareto": [sweet, pareto, runtime, log_to_parent],
    "sweet-spot": [sweet, log_to_parent],
    "layers": [sweet, sensitivity, layers, log_to_parent],
    "report": [runs_csv, sweet, curves, pareto, runtime, sensitivity, layers, markdown_report,
               html_report, log_to_parent],
}


def run_command(name: str, runs: RunTable, opts: Options) -> Analysis:
    v.one_of("command", name, COMMANDS)
    a = Analysis(runs, opts)
    print(runs.summary())
    if a.frame.empty:
        print("nothing to analyze")
        return a
    for step in COMMANDS[name]:
        step(a)
    return a
