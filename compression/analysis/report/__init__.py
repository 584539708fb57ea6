"""Turn a selection of runs into files: figures (PNG, SVG, PDF), CSV tables, sweet-spot JSON, a
Markdown and a self-contained HTML report; then log them to the sweep's parent run.

Each step is a function of one `Analysis` that records what it wrote; a command is a list of
steps (COMMANDS), so `report` is just every step in order.

Split by job: `analysis` (the state the steps share), `steps` (collecting and deriving the
report's data), `render` (Markdown and HTML), `publish` (writing the pages, the MLflow upload)
and `pipeline` (the commands). This package re-exports them all, so
`compression.analysis.report.<name>` stays the one address callers use.
"""

import logging

from compression.analysis.report.analysis import ARTIFACT_DIR, Analysis, Figure, Options
from compression.analysis.report.pipeline import COMMANDS, Step, run_command
from compression.analysis.report.publish import (
    DEFAULT_UI,
    html_report,
    log_to_parent,
    markdown_report,
    ui_artifact_url,
    ui_base,
)
from compression.analysis.report.render import (
    AUTOTUNE_PAGE,
    SECTIONS,
    TEXT_FIRST,
    md_to_html,
    render_html,
    render_markdown,
)
from compression.analysis.report.steps import (
    PAIR,
    autotune,
    curves,
    layer_views,
    layers,
    pareto,
    runs_csv,
    runtime,
    sensitivity,
    sweet,
)

log = logging.getLogger(__name__)  # the same logger name as when this was one module

__all__ = [
    "ARTIFACT_DIR", "AUTOTUNE_PAGE", "COMMANDS", "DEFAULT_UI", "PAIR", "SECTIONS", "TEXT_FIRST",
    "Analysis", "Figure", "Options", "Step", "autotune", "curves", "html_report", "layer_views",
    "layers", "log", "log_to_parent", "markdown_report", "md_to_html", "pareto",
    "render_html", "render_markdown", "run_command", "runs_csv", "runtime", "sensitivity",
    "sweet", "ui_artifact_url", "ui_base",
]
