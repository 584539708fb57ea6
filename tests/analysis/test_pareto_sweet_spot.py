"""Pareto set, knee and sweet spot on hand-built run tables: exact rows, ties, a single run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from compression.analysis.pareto import FRONTS, Objective, knee_index, pareto_mask
from compression.analysis.sweet_spot import sweet_spot
from compression.core.errors import ConfigError

SIZE = FRONTS["size"]


def table(rows: list[tuple]) -> pd.DataFrame:
    """(run_id, accuracy, size_bytes, accuracy_drop) rows; latency = size / 1000."""
    df = pd.DataFrame(rows, columns=["run_id", "accuracy", "size_bytes", "accuracy_drop"])
    df["latency_ms"] = df["size_bytes"] / 1000
    return df


def front_ids(df: pd.DataFrame) -> list[str]:
    return df.loc[pareto_mask(df, SIZE), "run_id"].tolist()


def test_pareto_set_is_exactly_the_non_dominated_rows() -> None:
    df = table([("big", 0.98, 200_000, 0.0), ("mid", 0.97, 50_000, 0.01),
                ("worse-mid", 0.95, 60_000, 0.03), ("small", 0.90, 10_000, 0.08),
                ("tiny-bad", 0.40, 12_000, 0.58)])
    assert front_ids(df) == ["big", "mid", "small"]


def test_exact_ties_are_all_kept_and_equal_size_with_lower_accuracy_is_dominated() -> None:
    df = table([("a", 0.97, 50_000, 0.01), ("a-twin", 0.97, 50_000, 0.01),
                ("same-size-worse", 0.96, 50_000, 0.02), ("same-acc-bigger", 0.97, 51_000, 0.01)])
    assert front_ids(df) == ["a", "a-twin"]


def test_single_run_is_its_own_front_and_sweet_spot_without_a_knee() -> None:
    df = table([("only", 0.95, 1000, 0.005)])
    assert front_ids(df) == ["only"]
    spot = sweet_spot(df)
    assert spot.best["run_id"] == "only" and spot.candidates == 1 and spot.knee is None


def test_rows_missing_an_objective_are_never_on_the_front() -> None:
    df = table([("a", 0.97, 50_000, 0.0), ("no-size", 0.99, np.nan, 0.0)])
    assert front_ids(df) == ["a"]


def test_sweet_spot_is_the_smallest_run_within_tolerance() -> None:
    df = table([("dense", 0.98, 200_000, 0.0), ("ok", 0.972, 40_000, 0.008),
                ("too-lossy", 0.95, 10_000, 0.03)])
    assert sweet_spot(df, tolerance=0.01).best["run_id"] == "ok"
    assert sweet_spot(df, tolerance=0.05).best["run_id"] == "too-lossy"


def test_drop_equal_to_tolerance_counts_despite_float_rounding() -> None:
    drop = 0.9805 - 0.9705  # 0.010000000000000009
    df = table([("dense", 0.9805, 200_000, 0.0), ("edge", 0.9705, 20_000, drop)])
    assert sweet_spot(df, tolerance=0.01).best["run_id"] == "edge"


def test_sweet_spot_ties_go_to_higher_accuracy_then_the_earlier_row() -> None:
    df = table([("first", 0.97, 20_000, 0.01), ("better", 0.975, 20_000, 0.005),
                ("better-later", 0.975, 20_000, 0.005)])
    assert sweet_spot(df).best["run_id"] == "better"


def test_no_run_within_tolerance_gives_none_and_a_note() -> None:
    spot = sweet_spot(table([("a", 0.5, 1000, 0.4)]))
    assert spot.best is None and spot.candidates == 0 and "tolerance" in spot.notes[-1]


def test_sweet_spot_by_latency_ranks_the_interleaved_speedup_not_raw_latency() -> None:
    # Raw latencies come from different moments on a shared machine: the dense run was timed
    # while the machine was quiet (0.053 ms), the int8 one while it was busy (0.0955 ms), but
    # timed interleaved with its own baseline the int8 run is the faster one.
    df = table([("dense", 0.97, 200_000, 0.0), ("int8", 0.97, 50_000, 0.0)])
    df["latency_ms"] = [0.053, 0.0955]
    df["speedup"] = [0.98, 1.3]
    spot = sweet_spot(df, by="latency")
    assert spot.best["run_id"] == "int8"
    assert spot.best["relative_latency"] == pytest.approx(1 / 1.3)
    assert spot.filename == "sweet_spot_latency.json"
    assert sweet_spot(df).filename == "sweet_spot_size.json"  # the report's is not overwritten


def test_a_lucky_seed_does_not_make_a_configuration_qualify() -> None:
    df = table([("s0", 0.96, 10_000, 0.02), ("s1", 0.975, 10_000, 0.005),
                ("safe", 0.98, 50_000, 0.0)])
    df["config_key"] = ["cfg-small", "cfg-small", "cfg-big"]
    spot = sweet_spot(df, tolerance=0.01)  # cfg-small's mean drop is 0.0125
    assert spot.best["run_id"] == "safe" and spot.total == 2


def test_knee_is_the_point_farthest_from_the_chord() -> None:
    # Accuracy rises fast up to 20 kB, then flattens: the knee is the 20 kB run.
    df = table([("a", 0.50, 1_000, 0), ("b", 0.90, 20_000, 0), ("c", 0.95, 100_000, 0),
                ("d", 0.96, 1_000_000, 0)])
    front = df[pareto_mask(df, SIZE)]
    assert df.loc[knee_index(front, SIZE), "run_id"] == "b"
    assert knee_index(front.iloc[:2], SIZE) is None  # two points: no knee


def test_sweet_spot_json_and_table(tmp_path) -> None:
    spot = sweet_spot(table([("a", 0.97, 36_450, 0.0)]))
    data = json.loads(spot.to_json(tmp_path / "s.json").read_text())
    assert data["best"]["run_id"] == "a" and data["tolerance"] == 0.01
    assert "run a" in spot.table() and "size_bytes=36,450 B" in spot.table()
    md = spot.markdown()
    assert "| sweet spot | a | a | 0.97 | 0 | 36,450 |" in md and "e+0" not in md


def test_bad_arguments_name_the_value() -> None:
    with pytest.raises(ConfigError, match="--by='cost'"):
        sweet_spot(table([("a", 0.9, 1, 0.0)]), by="cost")
    with pytest.raises(ConfigError, match="direction='up'"):
        Objective("accuracy", "up")


def test_sweet_spot_qualifies_on_validation_by_default_and_on_test_when_asked() -> None:
    df = table([("test-lucky", 0.975, 1000, 0.005), ("val-ok", 0.96, 500, 0.02)])
    df["val_accuracy_drop"] = [0.02, 0.005]  # the two splits disagree
    on_val = sweet_spot(df)
    assert on_val.selected_on == "val" and on_val.best["run_id"] == "val-ok"
    assert on_val.best["accuracy_drop"] == 0.02  # reported as measured on test
    on_test = sweet_spot(df, select_on="test")
    assert on_test.selected_on == "test" and on_test.best["run_id"] == "test-lucky"
    assert "with val accuracy drop <= 1 accuracy point (" in on_val.table()


def test_runs_without_a_validation_drop_fall_back_to_test_with_a_note() -> None:
    df = table([("a", 0.975, 1000, 0.005), ("b", 0.96, 500, 0.02)])
    df["val_accuracy_drop"] = [0.0, np.nan]  # b was logged before the metric existed
    spot = sweet_spot(df)
    assert spot.selected_on == "test" and spot.best["run_id"] == "a"
    assert spot.notes == ["1 configuration(s) have no val_accuracy_drop (logged before it "
                          "existed): selected on the test accuracy drop"]
    with pytest.raises(ConfigError, match="--select-on='train'"):
        sweet_spot(df, select_on="train")


def test_perplexity_runs_are_minimized_on_fronts_and_in_the_sweet_spot() -> None:
    """Lower is better: the front keeps low perplexity, ties go to the lower one, and the
    tolerance (a perplexity rise, here above 1) applies to the signed drop."""
    from compression.analysis.pareto import oriented
    from compression.training import quality

    df = table([("dense", 5.0, 200_000, 0.0), ("ok", 5.4, 40_000, 0.4),
                ("ok-worse", 5.9, 40_000, 0.9), ("small", 9.0, 10_000, 4.0),
                ("big-bad", 8.0, 300_000, 3.0)])
    df["metric.name"] = "perplexity"
    assert quality.direction_of(df) == "min"
    mask = pareto_mask(df, oriented(SIZE, quality.direction_of(df)))
    assert df.loc[mask, "run_id"].tolist() == ["dense", "ok", "small"]
    assert sweet_spot(df, tolerance=1.0).best["run_id"] == "ok"  # tie at 40 kB: lower wins
    assert sweet_spot(df, tolerance=5.0).best["run_id"] == "small"
    assert "1 perplexity" in sweet_spot(df, tolerance=1.0).headline()
