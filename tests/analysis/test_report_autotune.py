"""The autotune page of `analyze.py report`: a real (tiny) autotune sweep on digits, then the
report, which must hold the winner, its command, its allocation chart, the search trace and the
comparison with uniform allocation. The trace's marking of PRUNED / infeasible trials is checked
on plain tables (an autotune sweep cannot prune today: its objective is not val_accuracy)."""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest
from omegaconf import OmegaConf

from compression.analysis import autotune as at
from compression.analysis import autotune_plots, plots

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "sweep"))
from test_sweep_cli import sweep

# the preset's conditions apply: quantization.allocation under lowbit, bits under uniform
SPACE = ["hydra.sweeper.params={pruning: 'choice(unstructured)', "
         "pruning.sparsity: 'interval(0.5,0.95)', pruning.allocation: 'uniform,sensitivity', "
         "quantization: 'none,lowbit', quantization.allocation: 'choice(uniform)', "
         "quantization.bits: '4,8'}"]


def test_trace_keeps_the_best_feasible_value_and_marks_the_rest() -> None:
    trials = pd.DataFrame({"trial": [0, 1, 2, 3, 4], "state": ["COMPLETE", "COMPLETE", "PRUNED",
                                                               "COMPLETE", "FAILED"],
                           "run_id": list("abcde"), "value": [900.0, 100.0, None, 500.0, None],
                           "drop": [0.005, 0.05, None, 0.0, None]})
    trials["feasible"] = (trials["state"] == "COMPLETE") & (trials["drop"] <= 0.01)
    assert at.trace(trials, minimize=True).tolist()[1:] == [900.0, 900.0, 500.0, 500.0]
    assert at.trace(trials, minimize=False).iloc[3] == 900.0
    fig = autotune_plots.search_trace(trials, metric="size_bytes", minimize=True,
                                      drop_metric="val_accuracy_drop", max_drop=0.01, winner=3,
                                      title="t")
    labels = fig.legends[0].get_texts()
    text = " ".join(t.get_text() for t in labels)
    assert "PRUNED" in text and "FAILED" in text and "over the target" in text
    assert "winner (trial 3)" in text


def test_allocation_chart_draws_bits_when_the_run_allocated_them(tmp_path: Path) -> None:
    table = pd.DataFrame({"layer": ["fc1", "fc2", "fc3"], "sparsity": [0.95, 0.8, 0.3],
                          "bits": [4, 4, 8]})
    fig = autotune_plots.allocation_bars(table, uniform=0.9, title="t")
    assert [ax.get_title() for ax in fig.axes] == ["sparsity per layer", "bits per layer"]
    fig = autotune_plots.allocation_bars(table.drop(columns="bits"), uniform=None, title="t")
    assert len(fig.axes) == 1


def test_the_winner_is_set_beside_the_best_uniform_trial_within_the_target() -> None:
    frame = pd.DataFrame({"tags.trial_number": ["0", "1", "2", "3"],
                          "pruning.allocation": ["uniform", "sensitivity", "uniform",
                                                 "uniform"],
                          "size_bytes": [900.0, 400.0, 600.0, 100.0],
                          "label": ["a", "b", "c", "d"]})
    trials = pd.DataFrame({"trial": [0, 1, 2, 3], "state": ["COMPLETE"] * 4,
                           "run_id": list("abcd"), "value": [900.0, 400.0, 600.0, 100.0],
                           "drop": [0.0, 0.005, 0.009, 0.02]})
    trials["feasible"] = trials["drop"] <= 0.01
    tune = at.Autotune(at.Target(0.01, False, "size"), 1, "python train.py x=1", trials)
    rivals = at.rivals(frame, tune)
    # trial 3 is smaller but over the drop: the best uniform trial within it is trial 2
    assert rivals[["role", "label"]].values.tolist() == [["winner", "b"], ["best uniform", "c"]]
    text = at.winner_text(tune, frame)
    assert "**Winner: trial 1**" in text and "python train.py x=1" in text
    assert "4 trials (4 COMPLETE); 3 met the target" in text
    uniform_winner = at.Autotune(tune.target, 2, None, trials)
    assert at.rivals(frame, uniform_winner)["role"].tolist() == ["winner", "best sensitivity"]


@pytest.mark.slow
def test_report_of_a_real_autotune_sweep_has_its_page(tmp_path: Path) -> None:
    out = sweep(tmp_path, "sweep=autotune", "target.max_drop=0.03", "target.patience=50",
                "hydra.sweeper.n_trials=5", f"hydra.sweep.dir={tmp_path / 'multirun'}", *SPACE)
    assert out.returncode == 0, out.stderr[-3000:]
    result = OmegaConf.load(tmp_path / "multirun" / "autotune.yaml")
    assert result.winner is not None  # 3 points on digits: met by some of 5 trials

    from analyze import main

    report = tmp_path / "report"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["report", "--sweep", "s", "--tracking-uri", uri, "--out", str(report),
                 "--formats", "png", "--no-log"]) == 0
    page = (report / "autotune.md").read_text()
    assert f"**Winner: trial {result.winner.trial}**" in page
    assert result.command in page  # the command that reproduces it
    assert "figures/autotune_trace.png" in page and "figures/autotune_allocation.png" in page
    assert "| winner |" in page  # beside the best trial of the other allocation, if one met it
    allocations = set(pd.read_csv(report / "runs.csv")["pruning.allocation"])
    if allocations == {"uniform", "sensitivity"}:
        assert "| best uniform |" in page or "| best sensitivity |" in page
    assert "Autotune: the winner and its search" in (report / "report.md").read_text()
    html = (report / "autotune.html").read_text()
    assert html.count("data:image/png;base64,") == 2
    size = (round(plots.FIGSIZE[1] * plots.DPI), round(plots.FIGSIZE[0] * plots.DPI))
    for stem in ("autotune_trace", "autotune_allocation"):
        assert matplotlib.image.imread(report / "figures" / f"{stem}.png").shape[:2] == size
    trace = pd.read_csv(report / "autotune_trace.csv")
    assert len(trace) == 5 and set(trace["state"]) <= {"COMPLETE", "PRUNED", "FAILED"}
    winner = trace[trace["trial"] == result.winner.trial].iloc[0]
    assert winner["feasible"] and winner["best_so_far"] == trace["best_so_far"].min()
