"""The talk's table from meta-device models: counts match the commonly cited figures, nothing
is allocated, and `analyze.py profile --talk` writes it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import analyze
from compression.analysis.talk import TABLE, alexnet, count, talk_table


def test_counts_match_the_cited_figures() -> None:
    table = talk_table().set_index("model")
    for name, row in table.iterrows():
        assert row.params_M == pytest.approx(row.cited_params_M, rel=0.02), name
        if row["cited_GFLOPs(MACs)"] == row["cited_GFLOPs(MACs)"]:  # not NaN: a CNN
            assert row.GMACs == pytest.approx(row["cited_GFLOPs(MACs)"], rel=0.02), name
    assert table.loc["GPT-2 XL", "fp32_MB"] == pytest.approx(6230, rel=0.01)
    assert table.loc["GPT-2 XL", "FLOPs_per_param"] > 2 * 1024  # ~2 per token, plus attention


def test_models_live_on_the_meta_device() -> None:
    with torch.device("meta"):
        model = alexnet()
    assert all(p.is_meta for p in model.parameters())
    params, flops = count(model, TABLE[0].example())
    assert params == 61_100_840 and flops > 0


def test_cli_writes_the_table(tmp_path: Path, capsys) -> None:
    assert analyze.main(["profile", "--talk", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "profile.csv").exists()
    assert "GPT-2 XL" in capsys.readouterr().out
    assert analyze.main(["profile", "model=mlp", "--talk", "--out", str(tmp_path)]) == 2
