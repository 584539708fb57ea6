"""Pruning and quantizing the character LM (model=charlm, data=text) through the same handlers
as the ViT: 2:4 survives the artifact round trip, head/neuron removal leaves a causal LM that
runs and reloads, dynamic int8 swaps every Linear."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from compression.artifact.format import load_artifact, save_artifact
from compression.models.vit import Attention
from compression.pruning.nm import groups_view
from compression.quantization import QUANTIZERS, Quantized

TEXT = ("model=charlm", "data=text", "data.context=16", "data.limit=64")
LINEARS = 4 * 6 + 1  # 4 blocks x (q, k, v, out, fc1, fc2) + head; the embedding is a lookup


def _nm_holds(model: nn.Module) -> bool:
    return all((groups_view(m.weight.detach() != 0, 4, 0).sum(-1) <= 2).all()
               for m in model.modules() if isinstance(m, nn.Linear))


def _reload(model: nn.Module, session, tmp_path: Path, quant: str = "none") -> nn.Module:
    path = tmp_path / "charlm.safetensors"
    save_artifact(model, path, model_cfg=session.rc.model, spec=session.data.spec,
                  quant_cfg=QUANTIZERS.build_config({"mode": quant}),
                  transforms=session.transforms)
    return load_artifact(path, session.rc.model)[0].eval()


@pytest.mark.parametrize("method", [
    ("pruning=sparsegpt", "pruning.pattern=nm", "pruning.sparsity=null"),
    ("pruning=nm", "pruning.criterion=wanda"),
    ("pruning=nm",),
], ids=["sparsegpt", "wanda", "magnitude"])
def test_two_four_holds_on_charlm_after_artifact_reload(prune, tmp_path: Path, method) -> None:
    model, _, session = prune(*TEXT, *method)
    assert _nm_holds(model)
    loaded = _reload(model, session, tmp_path)
    assert _nm_holds(loaded)
    x = session.data.val_x[:8]
    assert torch.equal(loaded(x), model.eval()(x))


def test_head_removal_keeps_charlm_causal_runnable_and_reloadable(prune, tmp_path) -> None:
    removed, _, session = prune(*TEXT, "pruning=structured")
    assert [m.num_heads for m in removed.modules() if isinstance(m, Attention)] == [2] * 4
    assert removed.blocks[0].mlp.fc1.out_features == 128
    x = session.data.val_x[:4]
    later = x.clone()
    later[:, 9] = (later[:, 9] + 1) % 256
    with torch.no_grad():
        out, changed = removed.eval()(x), removed(later)
    assert out.shape == (4, 256, 16) and torch.isfinite(out).all()
    torch.testing.assert_close(out[..., :9], changed[..., :9])  # still causal
    torch.testing.assert_close(_reload(removed, session, tmp_path)(x), out)


def test_dynamic_int8_swaps_every_linear_of_charlm_and_reloads(prune, tmp_path) -> None:
    model, _, session = prune(*TEXT, "pruning=none")
    qcfg = QUANTIZERS.build_config({"mode": "dynamic_int8"})
    q = Quantized.of(QUANTIZERS.get("dynamic_int8").handler.quantize(
        copy.deepcopy(model.eval()), qcfg, session), qcfg).model
    swapped = [m for m in q.modules() if "quantized" in type(m).__module__
               and type(m).__name__ == "Linear"]
    assert len(swapped) == LINEARS and not any(type(m) is nn.Linear for m in q.modules())
    x = session.data.val_x[:8]
    assert (q(x) - model(x)).abs().max() < 0.1 * model(x).abs().max()
    torch.testing.assert_close(_reload(q, session, tmp_path, "dynamic_int8")(x), q(x))


@pytest.mark.parametrize("extra", [{"bits": 4}, {"bits": "ternary", "qat": True, "epochs": 1}],
                         ids=["4bit", "ternary-qat"])
def test_lowbit_runs_on_every_linear_of_charlm(prune, extra) -> None:
    model, _, session = prune(*TEXT, "pruning=none")
    qcfg = QUANTIZERS.build_config({"mode": "lowbit", **extra})
    q = Quantized.of(QUANTIZERS.get("lowbit").handler.quantize(
        copy.deepcopy(model.eval()), qcfg, session), qcfg).model
    assert not any(type(m) is nn.Linear for m in q.modules())
    out = q(session.data.val_x[:4])
    assert out.shape == (4, 256, 16) and torch.isfinite(out).all()
