"""Real runs on digits (tiny training) in a temporary MLflow database, analyzed end to end.

Building the 7 runs and drawing 8 figures in 3 formats takes 15-40 s on 2 shared cores, so the
tests that need them are `slow` (run with `-m slow`); the CLI test is fast."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from mlflow.tracking import MlflowClient

import compression.config.run
from compression import tracking
from compression.analysis import plots
from compression.analysis.report import ARTIFACT_DIR, Options, run_command
from compression.analysis.runs import load_runs
from compression.analysis.selection import Selection
from compression.core.errors import ConfigError
from compression.run import pipeline

FAST = ["train.epochs=3", "finetune.epochs=1", "measure.repeats=3", "measure.warmup=1",
        "measure.batch_size=8"]
RUNS = [
    ["pruning=none"],  # the dense baseline
    ["pruning=unstructured", "pruning.sparsity=0.5"],
    ["pruning=unstructured", "pruning.sparsity=0.9"],
    ["pruning=unstructured", "pruning.sparsity=0.9", "quantization=dynamic_int8"],
    ["pruning=none", "model.width=0.5"],  # small dense
    ["pruning=unstructured", "pruning.sparsity=0.9", "pruning.include=[fc1]"],  # sensitivity
]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(tracking uri, parent run id) of a 6-run sweep plus one FAILED run, built once."""
    tmp = tmp_path_factory.mktemp("sweep")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = tracking.ensure_experiment(client, "compression")
    parent = client.create_run(exp, tags={"run_role": "parent"}).info.run_id
    base = [f"tracking.uri={uri}", f"tracking.parent_run_id={parent}",
            f"paths.cache={tmp / 'cache'}", f"paths.artifacts={tmp / 'artifacts'}", *FAST]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(compression.config.run.CONFIG_DIR),
                               version_base="1.3"):
        for overrides in RUNS:
            pipeline.run(compose("config", overrides=[*base, *overrides]))
        with pytest.raises(RuntimeError):
            pipeline.run(compose("config", overrides=[
                *base, "~model", "+model._target_=factories.exploding_model"]))
    GlobalHydra.instance().clear()
    client.set_terminated(parent)
    return uri, parent


@pytest.mark.slow
def test_report_writes_every_file_and_logs_them_to_the_parent(sweep, tmp_path: Path) -> None:
    uri, parent = sweep
    runs = load_runs(Selection(sweep=parent, tracking_uri=uri))
    assert len(runs.frame) == len(RUNS) and runs.excluded == {"FAILED": 1}
    out = tmp_path / "out"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "stale.png").write_bytes(b"left by an older analysis")
    a = run_command("report", runs, Options(out=out))
    assert out / "figures" / "stale.png" not in a.written()

    stems = {"curve_sparsity", "curve_ratio", "pareto_size", "pareto_latency",
             "layer_sensitivity", "layer_bars", "layer_sparsity", "weight_histograms"}
    assert set(a.figures) == stems
    width, height = (round(v * plots.DPI) for v in plots.FIGSIZE)
    for stem in stems:
        for ext in plots.FORMATS:
            assert (out / "figures" / f"{stem}.{ext}").stat().st_size > 1000
        assert matplotlib.image.imread(out / "figures" / f"{stem}.png").shape[:2] == (
            height, width)
    for name in ("runs.csv", "pareto_size.csv", "pareto_latency.csv", "curve_sparsity.csv",
                 "auc_sparsity.csv", "layers.csv", "layer_sensitivity.csv", "sweet_spot_size.json",
                 "report.md", "report.html"):
        assert (out / name).stat().st_size > 0, name
    report = (out / "report.md").read_text()
    assert all(f"figures/{stem}.png" in report for stem in stems)
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(stems)  # self-contained

    client = MlflowClient(tracking_uri=uri)
    logged = client.list_artifacts(parent, ARTIFACT_DIR)
    assert {Path(f.path).name for f in logged} >= {"report.md", "report.html", "figures"}
    figures = {Path(f.path).name for f in client.list_artifacts(parent, f"{ARTIFACT_DIR}/figures")}
    assert "curve_sparsity.png" in figures and "stale.png" not in figures
    # the parent's report.md points its figures where the UI serves them (MLflow's viewer shows
    # no image by relative path); the one on disk keeps relative paths
    uploaded = Path(client.download_artifacts(parent, f"{ARTIFACT_DIR}/report.md", str(tmp_path)))
    assert ("](http://127.0.0.1:5000/get-artifact?path=analysis%2Ffigures%2Fcurve_sparsity.png"
            f"&run_uuid={parent})") in uploaded.read_text()
    assert len(a.written()) == len(figures) + len(a.tables)


@pytest.mark.slow
def test_sweet_spot_and_study_selection(sweep, tmp_path: Path) -> None:
    uri, parent = sweep
    client = MlflowClient(tracking_uri=uri)
    runs = load_runs(Selection(sweep=parent, tracking_uri=uri))
    for run_id in [parent, *runs.frame["run_id"][:2]]:  # as the Optuna sweeper tags them
        client.set_tag(run_id, "study_name", "demo-study")
    by_study = load_runs(Selection(sweep="demo-study", tracking_uri=uri))
    assert len(by_study.frame) == 2 and by_study.parent_run_id == parent
    a = run_command("sweet-spot", runs, Options(out=tmp_path, log_to_mlflow=False))
    assert a.sweet is not None and a.sweet.total == len(RUNS)
    assert (tmp_path / "sweet_spot_size.json").stat().st_size > 0
    run_command("sweet-spot", runs, Options(out=tmp_path, log_to_mlflow=False, by="latency"))
    assert (tmp_path / "sweet_spot_latency.json").stat().st_size > 0  # beside, not over it


@pytest.mark.slow
def test_layers_of_a_chosen_run_by_id_prefix_keep_the_sweet_spots_files(sweep, tmp_path) -> None:
    uri, parent = sweep
    runs = load_runs(Selection(sweep=parent, tracking_uri=uri))
    chosen = runs.frame["run_id"].iloc[1]
    a = run_command("layers", runs, Options(out=tmp_path, run_id=chosen[:10],
                                            log_to_mlflow=False))
    views = ("layer_bars", "layer_sparsity", "weight_histograms")
    assert {f"{stem}_{chosen[:8]}" for stem in views} <= set(a.figures)
    assert not set(views) & set(a.figures)  # the sweet spot's own files are left alone
    assert (tmp_path / f"layers_{chosen[:8]}.csv").stat().st_size > 0
    with pytest.raises(ConfigError, match="--run nope matches none of the 6 selected finished"):
        run_command("layers", runs, Options(out=tmp_path, run_id="nope", log_to_mlflow=False))


@pytest.mark.slow
def test_latest_sweep_gets_a_folder_of_its_own(sweep) -> None:
    uri, parent = sweep
    selection = Selection(sweep="latest", tracking_uri=uri)
    runs = load_runs(selection)
    assert runs.parent_run_id == parent
    assert runs.sweep_name in (parent, "demo-study")  # the study tag, once a test has set it
    assert selection.default_out(runs.sweep_name).name == f"sweep-{runs.sweep_name}"


def test_sweeps_with_a_common_prefix_get_distinct_folders() -> None:
    names = {Selection(sweep=s).name() for s in ("pareto-digits-mlp", "pareto-digits-lenet5")}
    assert names == {"sweep-pareto-digits-mlp", "sweep-pareto-digits-lenet5"}
    assert Selection(sweep="sweep-20261129-1").name() == "sweep-20261129-1"  # unnamed study


@pytest.mark.slow
def test_unknown_selection_fails_in_one_line(sweep) -> None:
    uri, _ = sweep
    with pytest.raises(ConfigError, match="neither a run id nor a study"):
        load_runs(Selection(sweep="no-such-sweep", tracking_uri=uri))
    with pytest.raises(ConfigError, match="no runs selected"):
        Selection()


def test_cli_help_and_profile(tmp_path: Path) -> None:
    root = Path(compression.config.run.__file__).parents[2]
    out = subprocess.run([sys.executable, "analyze.py", "--help"], cwd=root, text=True,
                         capture_output=True, check=True).stdout
    assert "report" in out and "--sweep" in out
    import analyze

    assert analyze.main(["profile", "model=lenet5", "--out", str(tmp_path)]) == 0
    assert "lenet5" in (tmp_path / "profile.csv").read_text()
    assert analyze.main(["curves"]) == 2  # no selection: one-line error
