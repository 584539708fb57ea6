"""sweep=autotune: the target becomes objective + constraint, the search stops once the target
is met and `patience` trials bring nothing better, and the winner's command reproduces it."""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState
from test_sweep_cli import runs, sweep, trials

import compression.config.run
from compression.config.run import RunConfig
from compression.core.errors import ConfigError
from compression.core.paths import PROJECT_ROOT
from compression.sweep.autotune import AutotuneTarget, best, enqueue_first_trials, stop_reason
from compression.sweep.space import SearchSpace


def _study(values: list[tuple[float, float]]) -> optuna.Study:
    """Trials of (size, drop - bound): feasible when the second is <= 0."""
    study = optuna.create_study(direction="minimize")
    for size, over in values:
        t = study.ask()
        t.set_user_attr("constraints", {"val_accuracy_drop<=0.01": over})
        study.tell(t, size)
    return study


def test_the_best_feasible_trial_wins_and_patience_ends_the_search() -> None:
    target = AutotuneTarget(patience=2)
    study = _study([(900, 0.02), (500, -0.001), (100, 0.05)])  # 100 B is infeasible
    assert best(study, target).number == 1
    assert stop_reason(study, target, time.monotonic()) is None  # 1 trial since the best
    study = _study([(900, 0.02), (500, -0.001), (100, 0.05), (700, -0.01)])
    assert "target met by trial 1" in stop_reason(study, target, time.monotonic())
    assert stop_reason(_study([(100, 0.05)] * 5), target, time.monotonic()) is None  # not met
    assert "timeout" in stop_reason(_study([]), AutotuneTarget(timeout=1), time.monotonic() - 2)


def test_first_trials_are_queued_once_in_a_new_study_when_they_fit_the_space() -> None:
    space = {"pruning.sparsity": FloatDistribution(0.5, 0.99),
             "quantization": CategoricalDistribution(["none", "lowbit"])}
    target = AutotuneTarget(first_trials=[
        {"pruning.sparsity": 0.9, "quantization": "lowbit"},
        {"pruning.sparsity": 0.3, "quantization": "lowbit"},  # below the range: skipped
        {"pruning.sparsity": 0.9, "quantization.bits": 4},  # a key not swept: skipped
    ])
    study = optuna.create_study(direction="minimize")
    assert enqueue_first_trials(study, target, space) == 1
    trial = study.ask()
    assert trial.suggest_float("pruning.sparsity", 0.5, 0.99) == 0.9
    assert trial.suggest_categorical("quantization", ["none", "lowbit"]) == "lowbit"
    study.tell(trial, 100.0)
    assert enqueue_first_trials(study, target, space) == 0  # a resumed study: nothing again


@pytest.mark.parametrize("raw, message", [
    ({"max_drop": -0.1}, r"target\.max_drop"), ({"objective": "speed"}, r"target\.objective"),
    ({"patience": 0}, r"target\.patience"), ({"max_dorp": 0.01}, r"target\.max_dorp is not"),
    ("tight", "must be a mapping"), ({"first_trials": [0.9]}, "target.first_trials"),
])
def test_bad_targets_fail_in_one_line(raw, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        AutotuneTarget.from_settings(raw)


def test_the_preset_composes_with_its_target() -> None:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(compression.config.run.CONFIG_DIR),
                               version_base="1.3"):
        cfg = compose("config", overrides=["sweep=autotune", "target.relative=true"],
                      return_hydra_config=True)
    GlobalHydra.instance().clear()
    target = AutotuneTarget.from_settings(OmegaConf.to_container(cfg.target))
    assert (target.metric, target.direction, target.drop_metric) == (
        "size_bytes", "minimize", "val_accuracy_drop_rel")
    assert cfg.hydra.sweeper.study_name == "autotune-digits-mlp-size"
    assert target.metric in compression.config.run.RUN_METRICS
    assert target.drop_metric in compression.config.run.RUN_METRICS


def test_the_space_holds_mixed_precision_as_a_strategy() -> None:
    """quantization.allocation (uniform vs sensitivity) is a dimension under lowbit; a trial
    that picks sensitivity gets a bits budget instead of one width, and its overrides make a
    valid run config."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(compression.config.run.CONFIG_DIR),
                               version_base="1.3"):
        cfg = compose("config", overrides=["sweep=autotune"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    sweeper = cfg.hydra.sweeper
    space = SearchSpace.parse([f"{k}={v}" for k, v in sweeper.params.items()],
                              OmegaConf.to_container(sweeper.when))
    params = {p.key: p for p in space.params}
    assert params["quantization.allocation"].distribution.choices == ("uniform", "sensitivity")
    assert params["quantization.allocation"].when == {"quantization": ("lowbit",)}
    assert params["quantization.budget_bits"].when == {"quantization.allocation": ("sensitivity",)}
    assert params["quantization.bits"].when == {"quantization.allocation": ("uniform",)}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(60):
        overrides = space.suggest(study.ask())
        keys = {o.split("=")[0] for o in overrides}
        if "quantization=lowbit" in overrides:
            mixed = "quantization.allocation=sensitivity" in overrides
            assert ("quantization.budget_bits" in keys) == mixed
            assert ("quantization.bits" in keys) == (not mixed)
            seen.add(mixed)
            if mixed:
                with initialize_config_dir(config_dir=str(compression.config.run.CONFIG_DIR),
                                           version_base="1.3"):
                    trial_cfg = compose("config", overrides=overrides)
                GlobalHydra.instance().clear()
                RunConfig.from_cfg(trial_cfg)  # a valid run: budget and strategy accepted
        else:
            assert not keys & {"quantization.allocation", "quantization.budget_bits"}
    assert seen == {True, False}


@pytest.mark.slow
def test_autotune_finds_a_winner_that_its_command_reproduces(tmp_path: Path) -> None:
    space = ["hydra.sweeper.params={pruning: 'none,unstructured', "
             "pruning.sparsity: 'interval(0.3,0.9)', quantization: 'none,dynamic_int8'}",
             "hydra.sweeper.when={pruning.sparsity: {pruning: [unstructured]}}"]
    common = ["sweep=autotune", "target.max_drop=0.05", "hydra.sweeper.study_name=s",
              f"hydra.sweep.dir={tmp_path / 'multirun'}", *space]
    out = sweep(tmp_path, *common, "hydra.sweeper.n_trials=3", "target.patience=50")
    assert out.returncode == 0, out.stderr[-3000:]
    assert len(trials(tmp_path)) == 3
    # resume the same study with a larger budget and a patience it can meet
    out = sweep(tmp_path, *common, "hydra.sweeper.n_trials=8", "target.patience=2")
    assert out.returncode == 0, out.stderr[-3000:]
    done = [t for t in trials(tmp_path) if t.state == TrialState.COMPLETE]
    assert 3 < len(done) <= 8
    result = OmegaConf.load(tmp_path / "multirun" / "autotune.yaml")
    winner = next(t for t in done if t.number == result.winner.trial)
    assert all(c <= 0 for c in winner.user_attrs["constraints"].values())
    assert result.winner.size_bytes == min(
        t.values[0] for t in done if all(c <= 0 for c in t.user_attrs["constraints"].values()))
    words = shlex.split(result.command)
    assert words[:2] == ["python", "train.py"]
    assert not any(w.startswith(("sweep=", "target.", "hydra.")) for w in words)
    parent = next(r for r in runs(tmp_path) if r.data.tags.get("run_role") == "parent")
    assert parent.data.tags["autotune_command"] == result.command
    # the command, run as it is (one plain run), gives the winner's size to the byte
    single = subprocess.run([sys.executable, *words[1:]], cwd=PROJECT_ROOT, capture_output=True,
                            text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    [rerun] = [r for r in runs(tmp_path) if r.data.tags.get("run_role") == "single"]
    assert rerun.data.metrics["size_bytes"] == result.winner.size_bytes
