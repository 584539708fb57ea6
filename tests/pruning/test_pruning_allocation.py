"""Per-layer sparsity allocation from a sensitivity pass: the budget is met exactly, counted
from the model's actual zeros, and spent where it costs the least accuracy."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from compression.core.errors import ConfigError
from compression.pruning.allocation import LEVELS, allocate
from compression.run import pipeline


def test_the_greedy_spends_the_budget_on_the_layer_that_tolerates_it() -> None:
    sizes = {"big": 1000, "small": 100}
    curves = {"big": [0.9] * len(LEVELS),  # no accuracy lost at any level
              "small": [0.9 - 0.1 * i for i in range(len(LEVELS))]}
    zeros = allocate(sizes, curves, base=0.9, budget=800)
    assert zeros == {"big": 800, "small": 0}
    zeros = allocate(sizes, curves, base=0.9, budget=1050)  # beyond the big layer's 99.5%
    assert sum(zeros.values()) == 1050 and zeros["big"] == round(0.995 * 1000)


def test_a_budget_beyond_every_level_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"at most 0\.995"):
        allocate({"a": 1000}, {"a": [0.5] * len(LEVELS)}, base=0.9, budget=1000)


def test_sensitivity_allocation_meets_the_budget_from_actual_zeros(compose_cfg, tracking_uri,
                                                                   tmp_path: Path) -> None:
    cfg = compose_cfg("pruning=unstructured", "pruning.sparsity=0.8",
                      "pruning.allocation=sensitivity", "objectives=[sparsity,nonzero_params]")
    sparsity, _ = pipeline.run(cfg)
    client = MlflowClient(tracking_uri=tracking_uri)
    [run] = client.search_runs([client.get_experiment_by_name("compression").experiment_id])
    layers = Path(client.download_artifacts(run.info.run_id, "layers.csv", str(tmp_path)))
    rows = list(csv.DictReader(layers.open()))
    numel = sum(int(r["weight_numel"]) for r in rows)
    zeros = sum(int(r["weight_zeros"]) for r in rows)
    assert zeros == round(0.8 * numel)  # exactly the budget, from the artifact's zeros
    assert sparsity == pytest.approx(zeros / numel)
    allocated = dict(item.split(":") for item in run.data.params["pruning.allocated"].split(","))
    assert set(allocated) == {"fc1", "fc2", "fc3"}
    # digits: fc2 (300x100) holds most weights, fc3 (100x10) is the small classifier
    assert float(allocated["fc2"]) > 0.8 > float(allocated["fc3"])
    table = Path(client.download_artifacts(run.info.run_id, "allocation.csv", str(tmp_path)))
    assert [r["layer"] for r in csv.DictReader(table.open())] == ["fc1", "fc2", "fc3"]
    cached = list((tmp_path / "cache").glob("*-sensitivity-*.json"))
    assert len(cached) == 1  # the sensitivity pass is kept beside the baseline


def test_allocation_with_a_global_threshold_is_refused(compose_cfg) -> None:
    with pytest.raises(ConfigError, match=r"pruning\.scope=global"):
        pipeline.check(compose_cfg("pruning=unstructured", "pruning.allocation=sensitivity",
                                   "pruning.scope=global"))
