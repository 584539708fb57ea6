"""Turn a selection of runs into files: figures (PNG, SVG, PDF), CSV tables, sweet-spot JSON, a
Markdown and a self-contained HTML report; then log them to the sweep's parent run.

Each step is a function of one `Analysis` that records what it wrote; a command is a list of
steps (COMMANDS), so `report` is just every step in order.
"""

from __future__ import annotations

import base64
import html
import logging
import tempfile
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from compression.analysis import autotune as at
from compression.analysis import autotune_plots, plots, runtimes, tables
from compression.analysis import layers as L
from compression.analysis.curves import X_AXES, aggregate_curves, baseline_level, curve_auc
from compression.analysis.derive import derive
from compression.analysis.pareto import FRONTS, oriented, pareto_mask
from compression.analysis.runs import RunTable
from compression.analysis.sweet_spot import CRITERIA, DROPS, SweetSpot, sweet_spot
from compression.core import validation as v
from compression.core.errors import ArtifactError, ConfigError
from compression.models.build import ModelConfig
from compression.training import quality

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
    # The user's own model config from the command line (`model._target_=pkg.fn`): the only
    # factory a run's artifact may be rebuilt with (never one the run's files name).
    model: ModelConfig | None = None
    ui_url: str | None = None  # the MLflow UI the parent run's report.md links its figures to

    def __post_init__(self) -> None:
        # at most 1 for accuracy-like metrics, which sweet_spot checks once it knows the runs'
        # metric; a perplexity rise may exceed 1
        v.in_range("--tolerance", self.tolerance, 0, None)
        v.one_of("--by", self.by, CRITERIA)
        v.one_of("--select-on", self.select_on, DROPS)
        for f in self.formats:
            v.one_of("--formats", f, plots.FORMATS)
        if self.ui_url is not None and not self.ui_url.startswith(("http://", "https://")):
            raise ConfigError(f"--ui-url={self.ui_url!r} must be an http(s):// address, e.g. "
                              "http://127.0.0.1:5000 (MLflow's viewer shows images only from "
                              "such addresses)")


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
        quality.relabel_figure(fig, self.metric)  # no "accuracy" on an F1 axis
        paths = plots.save_figure(fig, self.fig_dir, stem, self.opts.formats)
        self.figures[stem] = Figure(stem, quality.relabel(caption, self.metric), section, paths)

    @property
    def metric(self) -> str | None:
        """The runs' quality metric when it is not top-1 (`metric.name`), else None."""
        return quality.name_of(self.frame)

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


AUTOTUNE_PAGE = (("autotune",), "Autotune")  # its own page beside the report (same section)
TEXT_FIRST = {"autotune"}  # the winner and its command before the figures


def markdown_report(a: Analysis) -> None:
    path = a.opts.out / "report.md"
    path.write_text(render_markdown(a))
    a.tables["report_md"] = path
    if "autotune" in a.text:
        page = a.opts.out / "autotune.md"
        page.write_text(render_markdown(a, only=AUTOTUNE_PAGE[0], heading=AUTOTUNE_PAGE[1]))
        a.tables["autotune_md"] = page


def html_report(a: Analysis) -> None:
    path = a.opts.out / "report.html"
    path.write_text(render_html(a))
    a.tables["report_html"] = path
    if "autotune" in a.text:
        page = a.opts.out / "autotune.html"
        page.write_text(render_html(a, only=AUTOTUNE_PAGE[0], heading=AUTOTUNE_PAGE[1]))
        a.tables["autotune_html"] = page


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
    with tempfile.TemporaryDirectory() as tmp:
        for path in files:  # only this command's files: the folder may hold older ones
            folder = path.parent.relative_to(a.opts.out).as_posix()
            pages = {a.tables.get("report_md"): {},
                     a.tables.get("autotune_md"): dict(only=AUTOTUNE_PAGE[0],
                                                       heading=AUTOTUNE_PAGE[1])}
            if path in pages:
                kw = pages[path]
                path = Path(tmp) / path.name  # the UI's own copy, under the same name
                path.write_text(render_markdown(a, ui_artifact_url(a, parent), **kw))
            client.log_artifact(parent, str(path),
                                ARTIFACT_DIR if folder == "." else f"{ARTIFACT_DIR}/{folder}")
    print(f"logged to MLflow: run {parent}, {len(files)} files in artifacts/{ARTIFACT_DIR}/")
    exp_id = client.get_run(parent).info.experiment_id
    print(f"in the MLflow UI: {ui_base(a)}/#/experiments/{exp_id}/runs/{parent}/artifacts/"
          f"{ARTIFACT_DIR}")


DEFAULT_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves by default


def ui_base(a: Analysis) -> str:
    """Where the MLflow UI that shows the parent run is served: --ui-url, else the tracking
    server itself, else `mlflow ui`'s default address."""
    if a.opts.ui_url:
        return a.opts.ui_url.rstrip("/")
    uri = a.runs.uri
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else DEFAULT_UI


def ui_artifact_url(a: Analysis, run_id: str) -> Callable[[str], str]:
    """Absolute addresses of the run's analysis files as the UI's server serves them. MLflow
    3.17's Markdown viewer shows an image only from an absolute http(s) address: a relative
    path is shown as its Markdown text and a data: URI is stripped."""
    base = ui_base(a)

    def url(rel: str) -> str:
        query = urllib.parse.urlencode({"path": f"{ARTIFACT_DIR}/{rel}", "run_uuid": run_id})
        return f"{base}/get-artifact?{query}"

    return url


# ---------------------------------------------------------------------------- rendering
SECTIONS = (("runs", "Runs"), ("autotune", "Autotune: the winner and its search"),
            ("sweet_spot", "Sweet spot"), ("curves", "Accuracy curves"),
            ("pareto", "Pareto fronts"), ("runtime", "Eager vs deployment runtime"),
            ("sensitivity", "Per-layer sensitivity"),
            ("layers", "Per-layer view of the chosen run"))


def _sections(a: Analysis, only: tuple[str, ...] | None = None
              ) -> Iterator[tuple[str, str, list[Figure]]]:
    """(key, title, figures) of each section that has figures or text, in report order (only
    the `only` ones when given)."""
    for key, title in SECTIONS:
        if only is not None and key not in only:
            continue
        figs = [f for f in a.figures.values() if f.section == key]
        if figs or key in a.text:
            yield key, title, figs


def _intro(a: Analysis) -> str:
    return quality.relabel(f"Selection: `{a.opts.out.name}`; tolerance "
                           f"{tables.points(a.opts.tolerance, a.metric)}; "
                           f"sweet spot by {a.opts.by}.",
                           a.metric)


def render_markdown(a: Analysis, url: Callable[[str], str] = str,
                    only: tuple[str, ...] | None = None, heading: str = "Compression analysis"
                    ) -> str:
    """The report as Markdown; `url` maps a file's path relative to the output folder to the
    address the figures and links use (default: that relative path); `only`: those sections
    (a page of its own)."""
    out = [f"# {heading}", _intro(a)]
    for key, title, figs in _sections(a, only):
        out.append(f"## {title}")
        if key in TEXT_FIRST and key in a.text:
            out.append(quality.relabel(a.text[key], a.metric))
        for f in figs:
            rel = {p.suffix[1:]: url(p.relative_to(a.opts.out).as_posix()) for p in f.paths}
            links = ", ".join(f"[{ext}]({r})" for ext, r in rel.items())
            img = rel.get("png") or next(iter(rel.values()))
            out.append(f"![{f.caption}]({img})\n\n*{f.caption}* ({links})")
        if key in a.text and key not in TEXT_FIRST:
            out.append(quality.relabel(a.text[key], a.metric))
    return "\n\n".join(out) + "\n"


def _data_uri(paths: list[Path]) -> str | None:
    png = next((p for p in paths if p.suffix == ".png"), None)
    if png is None:
        return None
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()


def _img_tag(paths: list[Path], caption: str) -> str:
    png = next((p for p in paths if p.suffix == ".png"), None)
    if png is None:
        return ""
    uri = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()
    return (f'<figure><img src="{uri}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def md_to_html(text: str) -> str:
    """Markdown (tables, lists, code) to HTML; raw HTML in the text is escaped, not kept."""
    import markdown

    return markdown.markdown(html.escape(text, quote=False), extensions=["tables"],
                             output_format="html")


def render_html(a: Analysis, only: tuple[str, ...] | None = None,
                heading: str = "Compression analysis") -> str:
    """The same content with real tables, figures embedded as data URIs: one file to mail."""
    body = [f"<h1>{html.escape(heading)}</h1>", md_to_html(_intro(a))]
    for key, title, figs in _sections(a, only):
        body.append(f"<h2>{html.escape(title)}</h2>")
        text = (f"<div class='section'>{md_to_html(quality.relabel(a.text[key], a.metric))}"
                "</div>" if key in a.text else "")
        figures = [_img_tag(f.paths, f.caption) for f in figs]
        body += [text, *figures] if key in TEXT_FIRST else [*figures, text]
    style = ("body{font-family:sans-serif;max-width:1250px;margin:auto;padding:0 12px}"
             "img{max-width:100%}table{border-collapse:collapse;font-size:13px;margin:8px 0}"
             "th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}"
             "th{background:#f0f0f0}td:first-child,td:nth-child(2),td:nth-child(3)"
             "{text-align:left}.section{overflow-x:auto}figcaption{font-style:italic}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(heading)}"
            f"</title><style>{style}</style></head><body>{''.join(body)}</body></html>\n")


Step = Callable[[Analysis], None]
COMMANDS: dict[str, list[Step]] = {
    "curves": [curves, log_to_parent],
    "pareto": [sweet, pareto, runtime, log_to_parent],
    "sweet-spot": [sweet, log_to_parent],
    "layers": [sweet, sensitivity, layers, log_to_parent],
    "report": [runs_csv, autotune, sweet, curves, pareto, runtime, sensitivity, layers,
               markdown_report, html_report, log_to_parent],
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
