"""Derived columns: small-dense runs measured against the full-width dense model; series."""

from __future__ import annotations

import pandas as pd
import pytest

from compression.analysis.curves import aggregate_curves, curve_auc
from compression.analysis.derive import derive
from compression.analysis.sweet_spot import sweet_spot


def runs() -> pd.DataFrame:
    common = {"model.name": "mlp", "data.name": "digits", "baseline_accuracy": 0.98}
    rows = [
        # method, width, quant, sparsity param, seed, accuracy, size, dense size, params, nonzero
        ("none", 1.0, "none", 0.0, 0, 0.98, 200_000, 200_000, 1000, 1000),
        ("unstructured", 1.0, "none", 0.9, 0, 0.96, 30_000, 200_000, 1000, 100),
        ("unstructured", 1.0, "none", 0.9, 1, 0.94, 30_000, 200_000, 1000, 100),
        ("unstructured", 1.0, "dynamic_int8", 0.9, 0, 0.95, 15_000, 200_000, 1000, 100),
        ("none", 0.5, "none", 0.0, 0, 0.97, 50_000, 50_000, 250, 250),
    ]
    df = pd.DataFrame(rows, columns=["pruning.method", "model.width", "quantization.mode",
                                     "pruning.sparsity", "seed", "accuracy", "size_bytes",
                                     "dense_size_bytes", "params", "nonzero_params"])
    df = df.assign(**common, run_id=[f"r{i}" for i in range(len(df))])
    df["accuracy_drop"] = df["baseline_accuracy"] - df["accuracy"]
    df.loc[4, "accuracy_drop"] = 0.0  # logged against its own (small) baseline
    df.loc[4, "baseline_accuracy"] = 0.97
    df["compression_ratio"] = df["dense_size_bytes"] / df["size_bytes"]
    df["sparsity"] = 1 - df["nonzero_params"] / df["params"]
    return df


def test_small_dense_is_compared_with_the_full_width_dense_model() -> None:
    d = derive(runs())
    small = d.iloc[4]
    assert small["role"] == "small dense"
    assert small["accuracy_drop"] == pytest.approx(0.01)  # 0.98 - 0.97, not the logged 0
    assert small["compression_ratio"] == pytest.approx(4.0)  # 200 kB / 50 kB, not 1x
    assert small["equivalent_sparsity"] == pytest.approx(0.75)  # 250 of 1000 params kept
    assert d.iloc[1]["accuracy_drop"] == pytest.approx(0.02)  # width-1 runs keep theirs


def test_small_dense_validation_drop_is_also_against_the_full_width_model() -> None:
    df = runs().assign(baseline_val_accuracy=0.97, val_accuracy=0.95, val_accuracy_drop=0.02)
    df.loc[4, ["baseline_val_accuracy", "val_accuracy_drop"]] = [0.96, 0.0]  # its own baseline
    d = derive(df)
    assert d.iloc[4]["val_accuracy_drop"] == pytest.approx(0.02)  # 0.97 - 0.95, not 0
    assert d.iloc[4]["logged_val_accuracy_drop"] == 0.0
    assert d.iloc[1]["val_accuracy_drop"] == pytest.approx(0.02)


def test_series_split_by_quantization_not_by_seed_or_sparsity() -> None:
    d = derive(runs())
    assert d["series"].tolist() == ["dense baseline", "unstructured", "unstructured",
                                    "unstructured + dynamic_int8", "small dense"]
    assert d["label"].iloc[3] == "mlp unstructured@0.9 + dynamic_int8"


def test_curves_average_seeds_and_report_area() -> None:
    curves = aggregate_curves(derive(runs()), "equivalent_sparsity")
    row = curves[curves["series"] == "unstructured"].iloc[0]
    assert (row["n"], row["y_mean"]) == (2, pytest.approx(0.95))
    assert row["y_std"] == pytest.approx(0.01414, abs=1e-4)
    assert "dense baseline" not in set(curves["series"])  # drawn as a line instead
    auc = curve_auc(pd.DataFrame({"series": ["s", "s"], "x": [0.0, 1.0], "y_mean": [1.0, 0.5]}))
    assert auc.loc[0, "auc"] == pytest.approx(0.75)


def test_sparse_kernel_runs_form_their_own_series_and_label() -> None:
    df = runs()
    df["pruning.sparse_kernel"] = "False"  # as MLflow returns params: strings
    extra = df.iloc[[1]].assign(**{"pruning.sparse_kernel": "True", "run_id": "r5"})
    d = derive(pd.concat([df, extra], ignore_index=True))
    assert d["series"].iloc[5] == "unstructured sparse_kernel=True"
    assert d["series"].iloc[1] == "unstructured sparse_kernel=False"
    assert d["label"].iloc[5] == "mlp unstructured@0.9 sparse-kernel"
    assert d["config_key"].iloc[5] != d["config_key"].iloc[1]


def test_small_dense_runs_without_a_full_width_reference_are_flagged() -> None:
    alone = derive(runs().iloc[[4]].reset_index(drop=True))  # only the width-0.5 run
    spot = sweet_spot(alone, select_on="test")
    assert any("no full-width dense run" in n for n in spot.notes)
    assert not any("no full-width" in n for n in sweet_spot(derive(runs()),
                                                              select_on="test").notes)


def test_allocated_targets_do_not_split_seeds_and_mixed_runs_say_so() -> None:
    """`*.allocated` params are what each run computed (they differ between seeds): the seeds
    of one configuration still form one point; a mixed-precision run is labelled by its budget."""
    df = runs()
    df["quantization.allocated"] = ["", "", "fc1:2,fc2:4", "", ""]
    df["pruning.allocated"] = ["", "fc1:0.9", "fc1:0.8", "", ""]
    d = derive(df)
    assert d["config_key"].iloc[1] == d["config_key"].iloc[2]
    mixed = df.iloc[[3]].assign(**{"quantization.mode": "lowbit", "quantization.bits": 4.0,
                                   "quantization.allocation": "sensitivity",
                                   "quantization.budget_bits": 3.0})
    assert derive(mixed)["label"].iloc[0] == "mlp unstructured@0.9 + lowbit mixed<=3-bit"
