"""Report rendering on hand-built run tables: readable numbers, real HTML tables, one Pareto
panel per (model, data), figure links the MLflow viewer displays, readable log axes."""

from __future__ import annotations

import matplotlib.image
import pandas as pd
import pytest

from compression.analysis import plots, tables
from compression.analysis import report as R
from compression.analysis.report import Options, render_markdown, run_command, ui_artifact_url
from compression.analysis.runs import RunTable
from compression.core.errors import ConfigError


def runs(pairs: tuple[tuple[str, str], ...] = (("mlp", "digits"),)) -> RunTable:
    """Per (model, data): a dense run and two pruned ones (one within 1 point, one not)."""
    rows = []
    for model, data in pairs:
        for i, (sparsity, acc, size, speedup) in enumerate(
                [(0.0, 0.98, 203_528, 1.0), (0.5, 0.975, 36_450, 1.05),
                 (0.9, 0.90, 12_000, 1.1)]):
            rows.append({
                "run_id": f"{model}-{data}-{i}", "status": "FINISHED", "start_time": len(rows),
                "model.name": model, "data.name": data, "seed": 0,
                "pruning.method": "none" if sparsity == 0 else "unstructured",
                "pruning.sparsity": sparsity, "sparsity": sparsity, "accuracy": acc,
                "val_accuracy": acc,
                "baseline_accuracy": 0.98, "baseline_val_accuracy": 0.98,
                "accuracy_drop": 0.98 - acc, "val_accuracy_drop": 0.98 - acc,
                "size_bytes": size, "dense_size_bytes": 203_528, "params": 50_000,
                "compression_ratio": 203_528 / size,
                "latency_ms": 0.05, "speedup": speedup, "effective_flops": 36_450.0 * (i + 1),
            })
    return RunTable(pd.DataFrame(rows), uri="sqlite:///unused.db")


def test_numbers_read_as_a_person_writes_them() -> None:
    assert tables.number(36450.0) == "36,450" and tables.number(3.645e4, "B") == "36,450 B"
    assert tables.number(0.9415) == "0.9415" and tables.number(float("nan")) == ""
    assert tables.points(0.01) == "1 accuracy point"
    assert tables.points(0.005) == "0.5 accuracy points"


def report(tmp_path, **options) -> R.Analysis:
    """Every report step but the per-layer one (which reads a run's files from MLflow)."""
    a = R.Analysis(runs(), Options(out=tmp_path, log_to_mlflow=False, formats=("png",),
                                   **options))
    for step in (R.runs_csv, R.sweet, R.curves, R.pareto, R.markdown_report, R.html_report):
        step(a)
    return a


def test_html_report_has_real_tables_and_readable_numbers(tmp_path) -> None:
    a = report(tmp_path)
    html = (tmp_path / "report.html").read_text()
    assert "<pre>" not in html and html.count("<table>") >= 3
    assert "<td>36,450</td>" in html and "e+04" not in html
    assert "tolerance 1 accuracy point;" in html
    assert (tmp_path / "sweet_spot_size.json").exists() and a.sweet is not None


def test_one_pareto_panel_per_model_and_data(tmp_path) -> None:
    pairs = (("lenet5", "fashion_mnist"), ("mlp", "digits"))
    a = run_command("pareto", runs(pairs), Options(out=tmp_path, log_to_mlflow=False,
                                                   formats=("png",)))
    front = pd.read_csv(tmp_path / "pareto_size.csv")
    # each pair's front on its own: the same sizes in two pairs do not dominate each other
    assert sorted(front["run_id"]) == sorted(f"{m}-{d}-{i}" for m, d in pairs for i in range(3))
    assert "per model and data set" in a.figures["pareto_size"].caption
    fig = plots.pareto([plots.ParetoPanel(f"{m} on {d}", g, g["accuracy"].notna(), None, None,
                                          0.98)
                        for (m, d), g in a.frame.groupby(["model.name", "data.name"])],
                       (plots.Objective("size_bytes", "min", log=True),
                        plots.Objective("accuracy", "max")), tolerance=0.01, title="t")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["lenet5 on fashion_mnist", "mlp on digits"]
    png = matplotlib.image.imread(tmp_path / "figures" / "pareto_size.png")
    assert png.shape[:2] == (round(plots.FIGSIZE[1] * plots.DPI),
                             round(plots.FIGSIZE[0] * plots.DPI))


def test_markdown_for_the_mlflow_viewer_links_figures_absolutely(tmp_path) -> None:
    a = report(tmp_path, ui_url="http://ui:5000/")
    local = render_markdown(a)
    assert "](figures/pareto_size.png)" in local  # the file on disk: relative, for editors
    ui = render_markdown(a, ui_artifact_url(a, "abc123"))
    assert ("](http://ui:5000/get-artifact?path=analysis%2Ffigures%2Fpareto_size.png"
            "&run_uuid=abc123)") in ui
    assert "](figures/" not in ui
    with pytest.raises(ConfigError, match=r"--ui-url='127\.0\.0\.1:5000' must be an http"):
        Options(out=tmp_path, ui_url="127.0.0.1:5000")


@pytest.mark.parametrize(("lo", "hi", "expected"), [
    (12_000, 203_528, [20_000, 50_000, 100_000, 200_000]),  # 1-2-5 where that gives 4
    (3.7, 14.7, [4, 5, 6, 8, 10, 15]),  # finer steps on a narrow axis
    (0.97, 2.0, None),  # narrower still: evenly spaced values instead
])
def test_log_axes_get_enough_labelled_ticks(lo, hi, expected) -> None:
    assert plots.log_ticks(lo, hi) == expected


def test_an_output_folder_that_cannot_be_made_is_one_line(tmp_path) -> None:
    from compression.core.errors import ConfigError

    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ConfigError) as e:
        run_command("report", runs(), Options(out=tmp_path / "a_file" / "sub",
                                              log_to_mlflow=False))
    assert str(e.value).startswith("--out=") and "cannot create the folder" in str(e.value)
    assert "\n" not in str(e.value)
