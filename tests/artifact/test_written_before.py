"""Artifacts written by the code before the architecture step (commit ad9522b, when the format
lived in compression/export.py) still load with today's code and score exactly the accuracy
their runs logged: one file per kind of stored entry and transform (channels removed, low-rank
factors, static int8, k-means codebooks, packed 4-bit weights, CSR sparse kernels). The files
are small real runs on digits (`train.epochs=3`); expected.json holds what MLflow logged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compression import data as data_mod
from compression.artifact.format import load_artifact
from compression.quantization import QUANTIZERS
from compression.training.loop import evaluate

HERE = Path(__file__).parent / "written_before"
EXPECTED = json.loads((HERE / "expected.json").read_text())


@pytest.fixture(scope="module")
def splits() -> data_mod.Splits:
    return data_mod.load(data_mod.DataConfig(name="digits"))  # the runs' default data


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_loads_and_scores_what_its_run_logged(name, splits) -> None:
    path = HERE / f"{name}.safetensors"
    assert path.stat().st_size == EXPECTED[name]["size_bytes"]  # the file as it was written
    model, meta = load_artifact(path)
    cast = QUANTIZERS.get(meta["quantization"]["mode"]).handler.cast_input
    assert evaluate(model, splits.test_x, splits.test_y, cast=cast) == EXPECTED[name]["accuracy"]
