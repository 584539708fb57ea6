"""Hydra override grammar -> Optuna distributions, conditional parameters and grids."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from compression.core.errors import ConfigError
from compression.sweep.space import SearchSpace

TABLE = [
    ("x=choice(a,b,c)", CategoricalDistribution(["a", "b", "c"])),
    ("x=a,b,c", CategoricalDistribution(["a", "b", "c"])),
    ("x=choice(1,2.5)", CategoricalDistribution([1, 2.5])),
    ("x=interval(0,1)", FloatDistribution(0.0, 1.0)),
    ("x=interval(0.5,0.99)", FloatDistribution(0.5, 0.99)),
    ("x=int(interval(1,5))", IntDistribution(1, 5)),
    ("x=tag(log,interval(1e-4,1e-1))", FloatDistribution(1e-4, 1e-1, log=True)),
    ("x=tag(log,int(interval(1,64)))", IntDistribution(1, 64, log=True)),
    # range: the stop value is excluded, for ints and floats alike
    ("x=range(1,10,3)", IntDistribution(1, 7, step=3)),
    ("x=range(0,10,2)", IntDistribution(0, 8, step=2)),
    ("x=range(0.1,0.5,0.1)", FloatDistribution(0.1, 0.4, step=0.1)),
    ("x=range(0.5,1.0,0.25)", FloatDistribution(0.5, 0.75, step=0.25)),
]


@pytest.mark.parametrize(("override", "expected"), TABLE)
def test_override_to_distribution_table(override: str, expected: object) -> None:
    [param] = SearchSpace.parse([override]).params
    assert param.distribution == expected


def test_fixed_values_pass_through_and_later_overrides_win() -> None:
    space = SearchSpace.parse(["a=1", "b=choice(x,y)", "b=z", "+c=[1,2]"])
    assert space.params == []
    assert space.fixed == ["a=1", "b=z", "+c=[1,2]"]


@pytest.mark.parametrize(("override", "message"), [
    ("x=range(5,1,1)", "is empty"),
    ("x=interval(2,1)", "is empty"),
    ("x=tag(log,interval(0,1))", "positive low end"),
    ("x=shuffle(a,b)", "shuffle"),
    ("x=glob(*)", "not supported"),
    ("x=choice(", "cannot parse"),
])
def test_bad_overrides_raise_one_line_config_errors(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as e:
        SearchSpace.parse([override])
    assert "\n" not in str(e.value)


def test_float_range_values_are_the_ones_typed() -> None:
    [p] = SearchSpace.parse(["x=range(0.1,0.5,0.1)"]).params
    assert p.grid_values() == [0.1, 0.2, 0.3, 0.4]  # not 0.30000000000000004


def _conditional() -> SearchSpace:
    return SearchSpace.parse(
        ["quantization=none,lowbit", "quantization.bits=2,4", "pruning.sparsity=0.5,0.9"],
        when={"quantization.bits": {"quantization": ["lowbit"]}},
    )


def test_grid_leaves_inactive_conditional_params_out_without_duplicates() -> None:
    points = _conditional().grid()
    assert len(points) == 2 * (1 + 2)
    assert {"quantization": "none", "pruning.sparsity": 0.5} in points
    assert {"quantization": "lowbit", "quantization.bits": 4, "pruning.sparsity": 0.9} in points
    assert len({tuple(sorted(p.items())) for p in points}) == len(points)


def test_conditional_param_is_suggested_only_when_its_condition_holds() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    space = _conditional()
    for _ in range(12):
        trial = study.ask()
        overrides = space.suggest(trial)
        lowbit = "quantization=lowbit" in overrides
        assert any(o.startswith("quantization.bits=") for o in overrides) == lowbit
        assert ("quantization.bits" in trial.params) == lowbit
        study.tell(trial, 0.0)


def test_grid_rejects_continuous_intervals_and_bad_conditions() -> None:
    with pytest.raises(ConfigError, match="grid sampler needs discrete values"):
        SearchSpace.parse(["x=interval(0,1)"]).grid()
    with pytest.raises(ConfigError, match=r"when.y: not a swept parameter"):
        SearchSpace.parse(["x=a,b"], when={"y": {"x": ["a"]}})
    with pytest.raises(ConfigError, match="z is not swept"):
        SearchSpace.parse(["x=a,b"], when={"x": {"z": ["a"]}})


def test_a_study_resumed_with_a_contradicting_space_is_refused_up_front() -> None:
    study = optuna.create_study()
    trial = study.ask()
    trial.suggest_categorical("quantization", ["none", "dynamic_int8"])
    trial.suggest_float("pruning.sparsity", 0.5, 0.9)
    study.tell(trial, 1.0)
    same = SearchSpace.parse(["quantization=none,dynamic_int8",
                              "pruning.sparsity=interval(0.3,0.95)", "seed=0,1"])
    same.check_compatible("s", study.trials)  # wider float range, new key: Optuna accepts both
    other = SearchSpace.parse(["quantization=none,dynamic_int8,static_int8"])
    with pytest.raises(ConfigError) as err:
        other.check_compatible("s", study.trials)
    assert str(err.value) == (
        "study 's' was run with quantization: choice(none, dynamic_int8), this sweep asks "
        "choice(none, dynamic_int8, static_int8); resume it with the same search space, or "
        "start a new study (hydra.sweeper.study_name=...)")
    with pytest.raises(ValueError, match="dynamic value space"):  # what Optuna would do later
        study.ask().suggest_categorical("quantization", ["none", "dynamic_int8", "static_int8"])


def test_a_resumed_range_that_changed_is_warned_about(caplog) -> None:
    study = optuna.create_study()
    trial = study.ask()
    trial.suggest_float("pruning.sparsity", 0.3, 0.97)
    study.tell(trial, 1.0)
    with caplog.at_level("WARNING", logger="compression.sweep.space"):
        SearchSpace.parse(["pruning.sparsity=interval(0.3,0.97)"]).check_compatible(
            "s", study.trials)
        assert caplog.text == ""
        SearchSpace.parse(["pruning.sparsity=interval(0.1,0.2)"]).check_compatible(
            "s", study.trials)
    assert "was run with pruning.sparsity: float[0.3, 0.97], this sweep asks float[0.1, 0.2]" \
        in caplog.text
