"""`analyze.py layers model=...` (no run) shows the cached trained baseline when there is one,
read only, and says which weights it shows."""

from __future__ import annotations

import pytest
import torch

import analyze
from compression import data as data_mod
from compression.analysis.profile import compose_run_config
from compression.training.baseline import cached_baseline, get_baseline


@pytest.mark.slow  # trains a baseline and draws two sets of figures: ~1 min on 2 shared cores
def test_layers_without_a_run_use_the_cached_baseline_and_say_so(tmp_path, capsys) -> None:
    overrides = ["model=mlp", "train.epochs=1", f"paths.cache={tmp_path / 'cache'}"]
    rc = compose_run_config(overrides)
    splits = data_mod.load(rc.data)

    assert analyze.main(["layers", *overrides, "--out", str(tmp_path / "a"),
                         "--formats", "png"]) == 0
    assert "showing freshly initialised weights" in capsys.readouterr().out
    assert cached_baseline(rc.model, rc.data, rc.train, rc.seed, splits,
                           rc.paths.cache_dir) is None  # looking did not train or write one

    trained = get_baseline(rc.model, rc.data, rc.train, rc.seed, splits, rc.paths.cache_dir)
    model, path = cached_baseline(rc.model, rc.data, rc.train, rc.seed, splits,
                                  rc.paths.cache_dir)
    assert path == trained.path
    for (name, a), (_, b) in zip(model.state_dict().items(), trained.model.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name
    assert analyze.main(["layers", *overrides, "--out", str(tmp_path / "b"),
                         "--formats", "png"]) == 0
    assert f"the trained baseline cached at {path}" in capsys.readouterr().out
