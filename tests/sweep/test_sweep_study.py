"""The Optuna side without training: settings validation, samplers, storage, dead workers,
surplus trials of concurrent workers, and the results of a constrained multi-objective study."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from optuna.trial import TrialState

import compression.config.run
from compression.config.run import RUN_METRICS
from compression.core import paths
from compression.core.errors import ConfigError
from compression.sweep import results
from compression.sweep import study as st
from compression.sweep.config import SweeperConfig
from compression.sweep.samplers import SAMPLERS, make_sampler
from compression.sweep.space import SearchSpace


@pytest.mark.parametrize(("settings", "message"), [
    ({"sampler": "annealing"}, "hydra.sweeper.sampler='annealing' is not a known value"),
    ({"directions": ["up"]}, "hydra.sweeper.directions='up' is not a known value"),
    ({"n_trials": 0}, "hydra.sweeper.n_trials=0 is out of range"),
    ({"n_trials": None}, "only allowed with sampler=grid"),
    ({"n_jobs": 0}, "hydra.sweeper.n_jobs=0 is out of range"),
    ({"max_failure_rate": 1.5}, "max_failure_rate=1.5 is out of range"),
    ({"constraints": {"accuracy_drop": "small"}}, "constraints.accuracy_drop='small' must be"),
    ({"constraints": {"accuracy_drop": {"below": 1}}}, "use a number"),
    ({"when": "lowbit"}, "hydra.sweeper.when='lowbit' must be a mapping"),
])
def test_bad_settings_raise_one_line_errors(settings: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as e:
        SweeperConfig(**settings)
    assert "\n" not in str(e.value)


def test_objectives_must_match_directions_and_name_metrics() -> None:
    cfg = SweeperConfig(directions=["maximize", "minimize"], constraints={"accuracy_drop": 0.01})
    cfg.check_objectives(["val_accuracy", "size_bytes"], RUN_METRICS)
    with pytest.raises(ConfigError, match="has 1 metric"):
        cfg.check_objectives(["val_accuracy"], RUN_METRICS)
    with pytest.raises(ConfigError, match="'size' is not a known value"):
        cfg.check_objectives(["val_accuracy", "size"], RUN_METRICS)


def test_constraint_values_are_feasible_at_or_below_zero() -> None:
    [upper] = SweeperConfig(constraints={"accuracy_drop": 0.01}).constraint_specs
    assert upper.values(0.005) == {"accuracy_drop<=0.01": pytest.approx(-0.005)}
    [both] = SweeperConfig(constraints={"val_accuracy": {"min": 0.9, "max": 1}}).constraint_specs
    assert max(both.values(0.95).values()) <= 0 < max(both.values(0.85).values())


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_every_sampler_is_seedable(name: str) -> None:
    space = SearchSpace.parse(["a=interval(0,1)", "b=choice(x,y,z)", "c=range(1,9,2)"])

    def params(seed: int) -> list[list[str]]:
        study = optuna.create_study(sampler=make_sampler(name, seed, {}))
        out = []
        for _ in range(3):
            trial = study.ask()
            out.append(space.suggest(trial))
            study.tell(trial, float(len(out)))
        return out

    assert params(1) == params(1)


def test_sampler_kwargs_are_checked() -> None:
    with pytest.raises(ConfigError, match="rejected by nsgaii"):
        make_sampler("nsgaii", 0, {"population_size": 1})


def test_storage_paths_are_anchored_at_the_project_root() -> None:
    root = paths.project_root()
    assert st.resolve_storage(None) == str(root / "outputs/optuna.journal")
    assert st.resolve_storage("sqlite:///studies.db") == f"sqlite:///{root / 'studies.db'}"
    assert st.resolve_storage("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
    assert st.redact("postgresql://me:secret@db:5432/optuna") == "postgresql://me:***@db:5432/optuna"


def test_same_study_name_resumes_in_journal_and_sqlite(tmp_path: Path) -> None:
    for storage in (str(tmp_path / "s.journal"), f"sqlite:///{tmp_path / 's.db'}"):
        cfg = SweeperConfig(storage=storage, study_name="resume")
        first = st.open_study(cfg)
        first.tell(first.ask(), 1.0)
        again = st.open_study(cfg)
        assert len(again.get_trials(states=(TrialState.COMPLETE,))) == 1
        with pytest.raises(ConfigError, match="exists with directions"):
            st.open_study(SweeperConfig(storage=storage, study_name="resume",
                                        directions=["minimize"]))


@pytest.mark.parametrize("scheme", ["postgresql", "postgresql+psycopg2"])
def test_postgresql_storage_when_available(scheme: str) -> None:
    """Both URL forms the README shows (plain: SQLAlchemy's default driver, psycopg 3)."""
    url = f"{scheme}://postgres@127.0.0.1:5432/postgres"
    try:
        study = st.open_study(SweeperConfig(storage=url, study_name=f"pg-{socket.gethostname()}"))
    except ConfigError as e:
        pytest.skip(f"PostgreSQL unreachable: {e}")
    try:
        study.tell(study.ask(), 1.0)
        assert study.trials[-1].state == TrialState.COMPLETE
    finally:
        optuna.delete_study(study_name=study.study_name, storage=url)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_trials_of_a_dead_worker_fail_and_are_queued_again(tmp_path: Path) -> None:
    study = st.open_study(SweeperConfig(storage=str(tmp_path / "j.journal"), study_name="s"))
    dead, alive = study.ask(), study.ask()
    dead.suggest_float("x", 0, 1)
    dead.set_user_attr(st.WORKER_ATTR, f"{socket.gethostname()}:{_dead_pid()}")
    st.claim(alive)  # this process: alive
    failed = st.fail_stale_trials(study, grace_period=3600, max_attempts=3)
    assert [t.number for t in failed] == [dead.number]
    states = {t.number: t.state for t in study.trials}
    assert states[dead.number] == TrialState.FAIL and states[alive.number] == TrialState.RUNNING
    assert st.counts(study).failed == 0  # a dead worker is not a failed configuration
    retry = study.ask()
    assert retry.suggest_float("x", 0, 1) == dead.params["x"]  # same point: nothing skipped
    assert st.fail_stale_trials(study, grace_period=3600, max_attempts=3) == []


def test_trial_without_heartbeat_for_the_grace_period_is_stale(tmp_path: Path) -> None:
    study = st.open_study(SweeperConfig(storage=str(tmp_path / "j.journal"), study_name="s"))
    t = study.ask()
    t.set_user_attr(st.WORKER_ATTR, "other-machine:123")
    t.set_user_attr(st.HEARTBEAT_ATTR, 0.0)  # last beat in 1970
    stale = st.fail_stale_trials(study, grace_period=60, max_attempts=3)
    assert [x.number for x in stale] == [t.number]


def test_only_the_lowest_numbered_running_trials_fill_n_trials(tmp_path: Path) -> None:
    """Two workers that each asked for 'the last trial' agree on who runs it."""
    study = st.open_study(SweeperConfig(storage=str(tmp_path / "j.journal"), study_name="s"))
    study.tell(study.ask(), 1.0)
    first, second = study.ask(), study.ask()
    assert not st.cancel_if_surplus(study, first, n_trials=2)
    assert st.cancel_if_surplus(study, second, n_trials=2)
    assert study.trials[second.number].state == TrialState.PRUNED


def test_results_hold_only_the_feasible_pareto_set(tmp_path: Path) -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    points = {0: (0.9, 100, 0.0), 1: (0.8, 50, 0.0), 2: (0.95, 10, 0.05), 3: (0.7, 60, 0.0)}
    for acc, size, drop in points.values():
        trial = study.ask()
        trial.set_constraint("accuracy_drop<=0.01", drop - 0.01)
        trial.set_user_attr("constraints", {"accuracy_drop<=0.01": drop - 0.01})  # as ours do
        study.tell(trial, [acc, size])
    best = results.best_trials(study)
    assert [t.number for t in best] == [0, 1]  # 2 dominates all but is infeasible; 3 dominated
    doc = OmegaConf.load(results.write_yaml(study, best, ["val_accuracy", "size_bytes"],
                                            tmp_path / "r.yaml"))
    assert [list(s["values"]) for s in doc.solutions] == [[0.9, 100], [0.8, 50]]
    table = results.write_csv(results.pareto_rows(best, ["val_accuracy", "size_bytes"]),
                              tmp_path / "pareto.csv").read_text().splitlines()
    assert table == ["trial_number,val_accuracy,size_bytes,constraint.accuracy_drop<=0.01",
                     "0,0.9,100.0,-0.01", "1,0.8,50.0,-0.01"]
    assert results.trials_table(study)["feasible"].tolist() == [True, True, False, True]


def test_mapping_settings_can_be_assigned_from_the_command_line() -> None:
    """conf/ leaves them null: Hydra would refuse `constraints={...}` on an empty mapping."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(compression.config.run.CONFIG_DIR),
                               version_base="1.3"):
        cfg = compose("config", return_hydra_config=True, overrides=[
            "hydra/sweeper=optuna", "hydra.sweeper.constraints={val_accuracy_drop: 0.01}",
            "hydra.sweeper.when={quantization.bits: {quantization: [lowbit]}}",
            "hydra.sweeper.sampler_kwargs={n_startup_trials: 2}"])
    GlobalHydra.instance().clear()
    raw = {k: v for k, v in OmegaConf.to_container(cfg.hydra.sweeper).items() if k != "_target_"}
    settings = SweeperConfig(**raw)
    assert settings.constraints == {"val_accuracy_drop": 0.01}
    assert settings.sampler_kwargs == {"n_startup_trials": 2}
    assert SweeperConfig().constraints == {} and SweeperConfig(when=None).when == {}


def test_unreachable_storage_fails_in_one_line_without_the_password() -> None:
    with pytest.raises(ConfigError) as err:
        st.make_storage("postgresql://me:secret@127.0.0.1:1/optuna")
    message = str(err.value)
    assert message.startswith("hydra.sweeper.storage=postgresql://me:***@127.0.0.1:1/optuna: ")
    assert "\n" not in message and "secret" not in message and "sqlalche.me" not in message


def test_a_resume_with_other_fixed_overrides_warns(caplog) -> None:
    study = optuna.create_study()
    st.note_fixed_overrides(study, ["finetune.epochs=1500", "tracking.uri=sqlite:///a.db"])
    with caplog.at_level("WARNING", logger="compression.sweep.study"):
        st.note_fixed_overrides(study, ["finetune.epochs=1500", "tracking.uri=sqlite:///b.db"])
        assert caplog.text == ""  # where results are logged does not change them
        st.note_fixed_overrides(study, ["finetune.epochs=100"])
    assert "(then: finetune.epochs=1500; now: finetune.epochs=100)" in caplog.text
    assert study.user_attrs[st.FIXED_ATTR] == ["finetune.epochs=1500"]  # the first run's
