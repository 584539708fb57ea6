"""Calibration-based pruning (Wanda, SparseGPT) and head / neuron removal on the tiny ViT:
each method's defining property on a constructed or real case, and artifacts that reload."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from compression.artifact.format import load_artifact, save_artifact
from compression.config.run import RunConfig
from compression.core.errors import ConfigError
from compression.models.vit import Attention
from compression.pruning.nm import groups_view
from compression.pruning.sparsegpt import Layout, sparsegpt_solve
from compression.quantization import QUANTIZERS


class Amplify(nn.Module):
    """Multiplies one input feature by `gain`: that feature's activation norm dwarfs the rest."""

    def __init__(self, feature: int, gain: float) -> None:
        super().__init__()
        self.feature, self.gain = feature, gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.ones(x.shape[1])
        scale[self.feature] = self.gain
        return x * scale


def _constructed(feature: int) -> nn.Module:
    """Flatten -> Amplify(feature) -> Linear(64, 8) whose `feature` column holds the smallest
    weights of every row, and whose row 0 is 10x larger than the others."""
    torch.manual_seed(0)
    fc = nn.Linear(64, 8)
    with torch.no_grad():
        fc.weight.copy_(torch.rand(8, 64) * 0.5 + 0.5)
        fc.weight[:, feature] = 0.01
        fc.weight[0] *= 10
    return nn.Sequential(nn.Flatten(), Amplify(feature, 1000.0), fc)


def test_wanda_keeps_small_weights_of_a_loud_feature_and_compares_within_rows(prune) -> None:
    feature = 36  # a central pixel of the 8x8 digits: nonzero in most images
    _, magnitude, _ = prune("pruning=unstructured", model=_constructed(feature))
    _, wanda, _ = prune("pruning=unstructured", "pruning.criterion=wanda",
                        model=_constructed(feature))
    mag, wan = magnitude.masks["2"], wanda.masks["2"]
    assert not mag[:, feature].any()  # magnitude drops the small weights everywhere
    assert wan[:, feature].all()  # Wanda keeps them: |w| x ||X_j|| is large
    assert (wan.sum(1) == 32).all()  # every row pruned to exactly half
    assert mag[0].sum() == 63  # magnitude: row 0 (10x larger) loses only its tiny weight


def test_wanda_is_refused_with_a_global_threshold(compose_cfg) -> None:
    with pytest.raises(ConfigError, match="within each output row"):
        RunConfig.from_cfg(compose_cfg("pruning=unstructured", "pruning.criterion=wanda",
                                       "pruning.scope=global"))


def _correlated(rows: int, cols: int) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(rows, 8) @ torch.randn(8, cols) + 0.1 * torch.randn(rows, cols)


@pytest.mark.parametrize("nm", [None, (2, 4)])
def test_sparsegpt_reconstruction_beats_plain_masking_at_the_same_mask(nm) -> None:
    x, w = _correlated(512, 64), torch.randn(16, 64)
    new, keep = sparsegpt_solve(w, x.T @ x / len(x), 0.5, Layout(64), nm, blocksize=32)
    assert (new[~keep] == 0).all() and keep.float().mean() == 0.5
    if nm:
        assert (keep.view(16, 16, 4).sum(-1) == 2).all()
    reconstructed = (x @ (new.float() - w).T).square().mean()
    masked = (x @ (w * keep - w).T).square().mean()
    assert reconstructed < 0.5 * masked


def test_sparsegpt_in_the_pipeline_session_lowers_the_first_layer_error(prune, digits) -> None:
    torch.manual_seed(0)
    from compression.models.build import ModelConfig, build_model

    dense = build_model(ModelConfig(name="mlp"), digits.spec)
    pruned, masks, session = prune("model=mlp", "pruning=sparsegpt", model=copy.deepcopy(dense))
    x = torch.cat(session.calibration_batches(8)).flatten(1)
    w, keep = dense.fc1.weight.detach(), masks.masks["fc1"]
    assert (pruned.fc1.weight[~keep] == 0).all() and keep.float().mean() == 0.5
    reconstructed = (x @ (pruned.fc1.weight.detach() - w).T).square().mean()
    assert reconstructed < (x @ (w * keep - w).T).square().mean()


def _nm_holds(model: nn.Module) -> bool:
    """Every Linear keeps at most 2 of every 4 consecutive input weights."""
    return all((groups_view(m.weight.detach() != 0, 4, 0).sum(-1) <= 2).all()
               for m in model.modules() if isinstance(m, nn.Linear))


@pytest.mark.parametrize("method", [
    ("pruning=sparsegpt", "pruning.pattern=nm", "pruning.sparsity=null"),
    ("pruning=nm", "pruning.criterion=wanda"),
], ids=["sparsegpt", "wanda"])
def test_two_four_holds_after_artifact_reload(prune, tmp_path: Path, method) -> None:
    model, _, session = prune("model=vit", *method)
    assert _nm_holds(model)
    path = tmp_path / "vit.safetensors"
    save_artifact(model, path, model_cfg=session.rc.model, spec=session.data.spec,
                  quant_cfg=QUANTIZERS.build_config({"mode": "none"}))
    loaded, _ = load_artifact(path, session.rc.model)
    assert _nm_holds(loaded)
    x = session.data.val_x[:8]
    assert torch.equal(loaded.eval()(x), model.eval()(x))


def test_head_removal_runs_and_equals_the_masked_model(prune, tmp_path: Path) -> None:
    masked, _, _ = prune("model=vit", "pruning=structured", "pruning.physical=false")
    removed, _, session = prune("model=vit", "pruning=structured")
    heads = [m.num_heads for m in removed.modules() if isinstance(m, Attention)]
    assert heads == [2, 2, 2, 2]
    assert removed.blocks[0].mlp.fc1.out_features == 64
    assert session.extra_metrics["param_reduction"] > 0.4
    x = session.data.val_x[:16]
    torch.testing.assert_close(removed.eval()(x), masked.eval()(x))
    path = tmp_path / "vit.safetensors"
    save_artifact(removed, path, model_cfg=session.rc.model, spec=session.data.spec,
                  quant_cfg=QUANTIZERS.build_config({"mode": "none"}),
                  transforms=session.transforms)
    loaded, meta = load_artifact(path, session.rc.model)
    assert meta["transforms"][0]["kind"] == "heads"
    torch.testing.assert_close(loaded.eval()(x), removed(x))


def test_sparsegpt_config_refusals(compose_cfg) -> None:
    with pytest.raises(ConfigError, match="does not match"):
        RunConfig.from_cfg(compose_cfg("pruning=sparsegpt", "pruning.pattern=nm",
                                       "pruning.sparsity=0.6"))
    with pytest.raises(ConfigError, match=r"pruning\.percdamp"):
        RunConfig.from_cfg(compose_cfg("pruning=sparsegpt", "pruning.percdamp=0"))
