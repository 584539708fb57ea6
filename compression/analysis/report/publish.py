"""The steps that write the report's pages and upload the analysis to the sweep's parent run,
and the MLflow UI addresses its uploaded report.md links its figures to."""

from __future__ import annotations

import tempfile
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from compression.analysis.report.analysis import ARTIFACT_DIR, Analysis
from compression.analysis.report.render import AUTOTUNE_PAGE, render_html, render_markdown


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
