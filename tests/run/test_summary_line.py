"""The run's one summary line says what was pruned: the selected layers when not all of them
at one target, and the channels and parameters a structured cut removed."""

from __future__ import annotations

from compression.config.run import RunConfig
from compression.data import DataSpec
from compression.models.build import build_model
from compression.run.records import summary_line, what_was_pruned

RESULTS = {"accuracy": 0.97, "baseline_accuracy": 0.98, "val_accuracy": 0.96, "sparsity": 0.005,
           "size_bytes": 36450, "dense_size_bytes": 203528, "compression_ratio": 5.58,
           "total_seconds": 1.0}


def pruned(compose_cfg, *overrides: str) -> str:
    rc = RunConfig.from_cfg(compose_cfg(*overrides))
    model = build_model(rc.model, DataSpec("digits", 1, 8, 10))
    return what_was_pruned(model, rc)


def test_selected_layers_are_named(compose_cfg) -> None:
    base = ("pruning=unstructured", "pruning.sparsity=0.9")
    assert pruned(compose_cfg, *base) == ""  # every layer at the target: nothing to add
    assert pruned(compose_cfg, *base, "pruning.include=[fc2]") == "[fc2]"
    assert pruned(compose_cfg, *base, "pruning.keep_first_last=true") == "[fc2]"
    assert pruned(compose_cfg, *base, "+pruning.overrides={fc3:0,fc1:0.5}") == (
        "[fc1@0.5, fc2@0.9]")
    assert pruned(compose_cfg, "pruning=none") == ""


def test_structured_cut_reports_channels_and_params_removed(compose_cfg) -> None:
    rc = RunConfig.from_cfg(compose_cfg("pruning=structured", "pruning.sparsity=0.5"))
    line = summary_line(rc, {**RESULTS, "channels_removed_fraction": 0.5,
                             "param_reduction": 0.48}, "[fc2]")
    assert "pruning=structured@0.5 [fc2] channels -50%, params -48% quant=none:" in line
    masked = summary_line(rc, {**RESULTS, "channels_removed_fraction": 0.5,
                               "param_reduction": 0.0})
    assert "structured@0.5 channels -50% quant=none" in masked
