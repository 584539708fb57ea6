"""What one analysis holds while its steps run: the command's options, the runs and their
derived frame, and the figures, tables and text sections written so far.

Kept apart from the steps and the rendering, which both read an `Analysis` and never each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from compression.analysis import plots
from compression.analysis.curves import baseline_level
from compression.analysis.derive import derive
from compression.analysis.runs import RunTable
from compression.analysis.sweet_spot import DROPS, SPOT_CRITERIA, SweetSpot
from compression.core import validation as v
from compression.core.errors import ConfigError
from compression.models.build import ModelConfig
from compression.training import quality

ARTIFACT_DIR = "analysis"  # folder of the parent run's artifacts holding the analysis


@dataclass
class Options:
    out: Path
    tolerance: float = 0.01  # accuracy drop allowed for the sweet spot: 0.01 = 1 point
    by: str = "size"  # what "most compressed" minimises: a name in SPOT_CRITERIA
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
        v.one_of("--by", self.by, SPOT_CRITERIA)
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
