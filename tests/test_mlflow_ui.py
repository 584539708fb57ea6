"""What a newcomer sees in `mlflow ui`, in a real headless Chromium against a real MLflow
server on 127.0.0.1: the experiment's runs table with a sweep's parent run, its child runs
nested under it, and the parent's analysis report.md displaying its figures."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest
from browser import chromium, executable, free_port, wait_for
from mlflow.tracking import MlflowClient

from compression import tracking
from compression.analysis.report import ARTIFACT_DIR

# A browser and a server starting on 2 shared cores: 1-3 minutes, so `slow` (CI runs it).
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(executable() is None,
                                 reason="no chromium (.ci/install --dev installs it)")]
CHILDREN = ("child-sparsity-0.5", "child-sparsity-0.9")


@pytest.fixture
def ui(tmp_path: Path) -> Iterator[tuple[str, MlflowClient]]:
    """(base URL, client) of an `mlflow server` on a free port over a fresh SQLite store."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    tracking.ensure_experiment(client, "compression")  # creates the tables before the server
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
         "--default-artifact-root", (tmp_path / "artifacts").as_uri(),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{base}/health", timeout=120)
        yield base, client
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def sweep(client: MlflowClient, tmp_path: Path, base: str) -> tuple[str, str]:
    """(experiment id, parent run id) of a parent with two children and a report.md whose
    figure points where the UI serves it."""
    exp = tracking.ensure_experiment(client, "compression")
    parent = client.create_run(exp, run_name="demo: pruning.sparsity",
                               tags={"run_role": "parent"}).info.run_id
    for name in CHILDREN:
        child = client.create_run(exp, run_name=name, tags={
            "run_role": "child", tracking.PARENT_TAG: parent}).info.run_id
        client.log_metric(child, "accuracy", 0.97)
        client.set_terminated(child)
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0, 1], [0, 1])
    (tmp_path / "figures").mkdir()
    fig.savefig(tmp_path / "figures" / "curve.png")
    plt.close(fig)
    client.log_artifact(parent, str(tmp_path / "figures" / "curve.png"), f"{ARTIFACT_DIR}/figures")
    url = f"{base}/get-artifact?path={ARTIFACT_DIR}/figures/curve.png&run_uuid={parent}"
    (tmp_path / "report.md").write_text(f"# Compression analysis\n\n![a curve]({url})\n")
    client.log_artifact(parent, str(tmp_path / "report.md"), ARTIFACT_DIR)
    client.set_terminated(parent)
    return exp, parent


def landed(page, url: str) -> str:
    """The address the UI settles on after opening `url` (it redirects an experiment's plain
    address to one of its tabs). From a blank page, so that no earlier address is read."""
    page.goto("about:blank")
    page.wait_js("location.href === 'about:blank'", 30)
    page.goto(url)
    return page.wait_js(r"""(() => { const h = location.hash;
        return /#\/experiments\/\d+\/[a-z]/.test(h) ? h : ''; })()""", 90)


def shows_runs_nested(page, folded: bool = True) -> None:
    """The runs table holds the parent and, unfolded by its `+`, its children. `folded`: they
    must start folded under it (the UI remembers an unfolded parent per experiment)."""
    page.wait_js("document.body.innerText.includes('demo: pruning.sparsity')", 90)
    text = page.text()
    assert "Run Name" in text  # the runs table, not the GenAI overview
    if folded:
        assert not any(name in text for name in CHILDREN)  # nested: folded under the parent
    if not all(name in text for name in CHILDREN):
        page.wait_js("""(() => {  // the parent row's expander, beside its name
            const b = document.querySelector('button[data-component-id*="runnamecellrenderer"]');
            if (!b) return false; b.click(); return true; })()""", 30)
    page.wait_js(" && ".join(f"document.body.innerText.includes('{n}')" for n in CHILDREN), 30)


def test_runs_table_shows_the_sweep_and_its_nested_children(ui, tmp_path) -> None:
    base, client = ui
    exp, parent = sweep(client, tmp_path, base)
    assert client.get_experiment(exp).tags[tracking.EXPERIMENT_KIND_TAG] == (
        "custom_model_development")
    with chromium() as page:  # a fresh browser profile: what a newcomer's browser remembers
        # MLflow 3.17 picks an experiment's first tab from its GenAI / Model training switch
        # (default GenAI), not from the experiment's tag (docs/analysis.md quotes its code).
        # Should a later MLflow honour the tag, this fails: then drop workflowType from links.
        assert "workflowType=genai" in landed(page, f"{base}/#/experiments/{exp}")

        # the address the project prints: the experiment's own page, in Model training mode
        url = tracking.experiment_ui_path(exp)
        assert url == f"#/experiments/{exp}?workflowType=machine_learning"
        assert f"/experiments/{exp}/runs" in landed(page, f"{base}/{url}")
        shows_runs_nested(page)

        # once the switch is on Model training (the browser remembers it), the plain address
        # and a click in the experiments list open the runs table too. Flipped where the UI is
        # still in GenAI mode (no workflowType in the address), as a newcomer would.
        landed_list = f"{base}/#/experiments"
        page.goto("about:blank")
        page.wait_js("location.href === 'about:blank'", 30)
        page.goto(landed_list)
        page.wait_js("""(() => { const b = Array.from(document.querySelectorAll(
            '[role=button]')).find(e => e.innerText.trim() === 'Model training');
            if (!b) return false; b.click(); return true; })()""", 30)
        page.wait_js("localStorage.getItem('mlflow.workflowType_v1') === "
                     "'\"machine_learning\"'", 30)
        assert f"/experiments/{exp}/runs" in landed(page, f"{base}/#/experiments/{exp}")
        shows_runs_nested(page, folded=False)
        page.goto(f"{base}/#/experiments")
        page.wait_js(f"""(() => {{ const a = Array.from(document.querySelectorAll('a')).find(
            e => e.innerText.trim() === 'compression' &&
                 /#\\/experiments\\/{exp}($|[?/])/.test(e.getAttribute('href') || ''));
            if (!a) return false; a.click(); return true; }})()""", 90)
        assert f"/experiments/{exp}/runs" in page.wait_js(
            "location.hash.includes('/runs') ? location.hash : ''", 90)
        shows_runs_nested(page, folded=False)

        page.goto(f"{base}/#/experiments/{exp}/runs/{parent}/artifacts/{ARTIFACT_DIR}/report.md")
        shown = page.wait_js("""Array.from(document.images).filter(i => i.src.includes(
            'get-artifact') && i.complete && i.naturalWidth > 0).length""", 90)
        assert shown == 1  # the figure is displayed, not shown as Markdown text
