"""Unstructured, random, block and N:M give exactly the pattern asked for."""

from __future__ import annotations

import pytest
import torch

from compression.config.run import RunConfig
from compression.core.errors import ConfigError
from compression.data import DataSpec
from compression.models.build import build_model, prunable_layers
from compression.pruning import check
from compression.pruning.nm import groups_view


def _zeros(model) -> dict[str, float]:
    return {n: float((m.weight == 0).float().mean()) for n, m in prunable_layers(model).items()}


@pytest.mark.parametrize("method", ["unstructured", "random"])
def test_each_layer_reaches_its_target(prune, method) -> None:
    model, masks, _ = prune("model=lenet5", f"pruning={method}", "pruning.sparsity=0.7")
    for name, frac in _zeros(model).items():
        assert abs(frac - 0.7) < 0.01, name
    assert set(masks.masks) == set(prunable_layers(model))


def test_random_differs_from_magnitude(prune) -> None:
    mag, _, _ = prune("pruning=unstructured", "pruning.sparsity=0.5")
    rnd, _, _ = prune("pruning=random", "pruning.sparsity=0.5")
    assert not torch.equal(mag.fc1.weight == 0, rnd.fc1.weight == 0)


def test_global_scope_hits_the_overall_target(prune) -> None:
    model, _, _ = prune("pruning=unstructured", "pruning.sparsity=0.8", "pruning.scope=global")
    ws = [m.weight for m in prunable_layers(model).values()]
    total = sum(w.numel() for w in ws)
    assert abs(sum(int((w == 0).sum()) for w in ws) / total - 0.8) < 1e-3


@pytest.mark.parametrize(("n", "m"), [(2, 4), (4, 8), (1, 4)])
def test_every_nm_group_holds_at_most_n_nonzeros(prune, n, m) -> None:
    model, _, _ = prune("model=lenet5", "pruning=nm", f"pruning.n={n}", f"pruning.m={m}")
    for name, layer in prunable_layers(model).items():
        groups = groups_view(layer.weight.detach() != 0, m, 0)
        assert int(groups.sum(-1).max()) <= n, name
    # Full groups keep exactly n (lenet5's fc layers have multiple-of-8 input sizes).
    assert abs(float((model.fc2.weight == 0).float().mean()) - (1 - n / m)) < 1e-6


def test_nm_conv_groups_run_along_input_channels(prune) -> None:
    model, _, _ = prune("model=resnet", "pruning=nm")
    w = model.layer2.conv1.weight.detach()  # (32, 16, 3, 3): groups of 4 input channels
    nz = (w != 0).view(32, 4, 4, 3, 3).sum(2)
    assert int(nz.max()) <= 2 and abs(float((w == 0).float().mean()) - 0.5) < 1e-6


def test_nm_sparsity_is_implied_and_a_mismatch_fails_in_one_line(compose_cfg) -> None:
    assert RunConfig.from_cfg(compose_cfg("pruning=nm")).pruning.sparsity == 0.5
    assert RunConfig.from_cfg(compose_cfg("pruning=nm", "pruning.sparsity=0.5")).pruning.n == 2
    with pytest.raises(ConfigError, match=r"does not match pruning.n:m=2:4 \(sparsity 1 - n/m"):
        RunConfig.from_cfg(compose_cfg("pruning=nm", "pruning.sparsity=0.9"))
    with pytest.raises(ConfigError, match=r"pruning\.n=4 is out of range"):
        RunConfig.from_cfg(compose_cfg("pruning=nm", "pruning.n=4"))


@pytest.mark.parametrize("shape", [[4, 4], [1, 4], [32, 32], [3, 5]])
def test_blocks_are_all_zero_or_untouched(prune, shape) -> None:
    torch.manual_seed(0)
    from compression.models.build import build_model

    model, _, session = prune("model=lenet5", "pruning=block", f"pruning.block=[{shape[0]},"
                              f"{shape[1]}]", "pruning.sparsity=0.6")
    torch.manual_seed(0)
    original = build_model(session.rc.model, session.data.spec)
    bh, bw = shape
    for name, layer in prunable_layers(model).items():
        w = layer.weight.detach().reshape(layer.weight.shape[0], -1)
        w0 = original.get_submodule(name).weight.detach().reshape(w.shape)
        for i in range(0, w.shape[0], bh):
            for j in range(0, w.shape[1], bw):
                blk, ref = w[i : i + bh, j : j + bw], w0[i : i + bh, j : j + bw]
                assert bool((blk == 0).all()) or torch.equal(blk, ref), (name, i, j)
    assert 0.5 < _zeros(model)["fc1"] < 0.7


def test_block_keeps_the_highest_l1_blocks(prune) -> None:
    model, _, _ = prune("pruning=block", "pruning.block=[1,64]", "pruning.sparsity=0.5",
                        "pruning.include=[fc1]", model=None)
    w = model.fc1.weight.detach()  # (300, 64): one block per row
    kept = (w != 0).any(1)
    assert int(kept.sum()) == 150


def test_overrides_first_match_wins_and_zero_keeps_a_layer_dense(prune) -> None:
    model, masks, _ = prune("pruning=unstructured", "pruning.sparsity=0.9",
                            "pruning.overrides={fc3:0,fc*:0.5}")
    z = _zeros(model)
    assert z["fc3"] == 0 and abs(z["fc1"] - 0.5) < 0.01 and abs(z["fc2"] - 0.5) < 0.01
    assert "fc3" not in masks.masks


def test_include_exclude_and_keep_first_last(prune) -> None:
    model, _, _ = prune("model=lenet5", "pruning=unstructured", "pruning.keep_first_last=true")
    z = _zeros(model)
    assert z["conv1"] == 0 and z["fc3"] == 0 and z["conv2"] > 0.4
    model, _, _ = prune("model=lenet5", "pruning=unstructured", "pruning.include=['fc*']",
                        "pruning.exclude=[fc2]")
    z = _zeros(model)
    assert z["conv1"] == 0 and z["fc2"] == 0 and z["fc1"] > 0.4


def _check(compose_cfg, *overrides: str) -> None:
    rc = RunConfig.from_cfg(compose_cfg(*overrides))
    spec = DataSpec("digits", 1, 8, 10)
    check(build_model(rc.model, spec), rc.pruning, spec.example_input())


def test_override_pattern_matching_no_layer_is_refused(compose_cfg) -> None:
    with pytest.raises(ConfigError, match="'fc9' matches no prunable layer"):
        _check(compose_cfg, "pruning=unstructured", "pruning.overrides={fc9:0.1}")


@pytest.mark.parametrize("method", ["unstructured", "structured", "lowrank"])
def test_a_selection_that_leaves_no_layer_is_refused(compose_cfg, method) -> None:
    with pytest.raises(ConfigError, match="leave no layer to prune; prunable layers: fc1, fc2, "
                                          "fc3"):
        _check(compose_cfg, f"pruning={method}", "pruning.exclude=[fc1,fc2,fc3]")
    _check(compose_cfg, f"pruning={method}", "pruning.exclude=[fc1,fc2]")  # fc3 is left
    _check(compose_cfg, "pruning=unstructured", "pruning.sparsity=0")  # a curve's dense point
