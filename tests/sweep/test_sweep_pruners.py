"""Multi-fidelity pruning: jobs report val accuracy per fine-tuning epoch to their Optuna trial,
and the study's pruner stops hopeless ones (PRUNED in Optuna, KILLED + trial_state=PRUNED in
MLflow, counted apart in analysis)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from test_sweep_cli import runs, sweep, trials

from compression.analysis.runs import load_runs
from compression.analysis.selection import Selection
from compression.core import job
from compression.core.errors import ConfigError, TrialPruned
from compression.core.registry import build_dataclass
from compression.sweep import pruners
from compression.sweep.config import SweeperConfig
from compression.sweep.study import make_storage


@pytest.mark.parametrize("settings, message", [
    ({"pruner": "medain"}, "hydra.sweeper.pruner='medain' is not a known value"),
    ({"pruner": "median", "pruner_kwargs": {"n_startup": 1}}, "pruner_kwargs"),
    ({"pruner": "median", "pruner_kwargs": 3}, "must be a mapping"),
])
def test_bad_pruner_settings_fail_in_one_line(settings: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_dataclass(SweeperConfig, settings, "hydra.sweeper")


def test_a_pruner_needs_val_accuracy_as_the_only_objective() -> None:
    cfg = SweeperConfig(pruner="hyperband", directions=["maximize", "minimize"])
    with pytest.raises(ConfigError, match=r"needs objectives=\[val_accuracy\]"):
        cfg.check_objectives(["val_accuracy", "size_bytes"], ("val_accuracy", "size_bytes"))
    SweeperConfig(pruner="hyperband").check_objectives(["val_accuracy"], ("val_accuracy",))


def test_the_reporter_finds_its_trial_and_raises_when_pruned(tmp_path: Path, monkeypatch) -> None:
    storage = str(tmp_path / "o.journal")
    pruner = {"n_startup_trials": 1, "n_warmup_steps": 0}
    study = optuna.create_study(study_name="p", storage=make_storage(storage),
                                direction="maximize",
                                pruner=pruners.make_pruner("median", pruner))
    good = study.ask()
    for step in (1, 2):
        good.report(0.9, step)
    study.tell(good, 0.9)
    hopeless = study.ask()
    pruners.export_settings(storage, "median", pruner)
    monkeypatch.setenv(f"{job.TAG_PREFIX}{job.STUDY_TAG}", "p")
    monkeypatch.setenv(f"{job.TAG_PREFIX}{job.TRIAL_TAG}", str(hopeless.number))
    try:
        reporter = pruners.TrialReporter.of(job.JobContext.current())
        assert reporter is not None and reporter.trial.number == hopeless.number
        with pytest.raises(TrialPruned, match=r"epoch 1: val_accuracy 0\.1000") as e:
            reporter.report(0.1, 1)
        assert (e.value.step, e.value.value) == (1, 0.1)
        assert study.trials[hopeless.number].intermediate_values == {1: 0.1}
    finally:
        pruners.export_settings(storage, "none", None)  # clears the pruner for later tests
    assert pruners.TrialReporter.of(job.JobContext.current()) is None


@pytest.mark.slow
@pytest.mark.parametrize("launcher", [[], ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                                           "hydra.sweeper.n_jobs=2"]], ids=["basic", "joblib"])
def test_hopeless_trials_are_pruned_not_failed(tmp_path: Path, launcher: list[str]) -> None:
    """Grid order: two healthy trials first, then 99.5%-random-pruned ones whose val accuracy
    after epoch 1 is far below theirs: the median pruner stops those."""
    out = sweep(
        tmp_path, "pruning=random", "finetune.epochs=3", "hydra.sweeper.sampler=grid",
        "hydra.sweeper.n_trials=null", "hydra.sweeper.pruner=median",
        "hydra.sweeper.pruner_kwargs={n_startup_trials: 2, n_warmup_steps: 0}",
        "pruning.sparsity=0.2,0.3,0.995,0.996", f"hydra.sweep.dir={tmp_path / 'multirun'}",
        *launcher)
    assert out.returncode == 0, out.stderr[-3000:]
    by_state = {s: [t for t in trials(tmp_path) if t.state == s] for s in TrialState}
    assert {t.params["pruning.sparsity"] for t in by_state[TrialState.PRUNED]} == {0.995, 0.996}
    assert len(by_state[TrialState.COMPLETE]) == 2 and not by_state[TrialState.FAIL]
    for t in by_state[TrialState.PRUNED]:
        assert 1 in t.intermediate_values  # reported by the job before it was stopped
    children = [r for r in runs(tmp_path) if r.data.tags.get("run_role") == "child"]
    pruned = [r for r in children if r.data.tags.get("trial_state") == "PRUNED"]
    assert len(pruned) == 2 and {r.info.status for r in pruned} == {"KILLED"}
    assert all(r.data.metrics["pruned_at_epoch"] >= 1 for r in pruned)
    assert sum(r.info.status == "FINISHED" for r in children) == 2
    table = load_runs(Selection(sweep="s", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"))
    assert len(table.frame) == 2 and table.excluded == {"PRUNED": 2}
