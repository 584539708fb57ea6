"""Low-rank factorization, user masks from a file, and the small-dense width."""

from __future__ import annotations

import itertools

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from compression.artifact.format import load_artifact, save_artifact
from compression.config.run import RunConfig
from compression.core.errors import ConfigError
from compression.data import DataSpec
from compression.models.build import ModelConfig, build_model
from compression.pruning import check
from compression.pruning.lowrank import choose_rank, factorize
from compression.pruning.small_dense import dense_params, width_for_nonzero
from compression.quantization import QUANTIZERS

SPEC = DataSpec("digits", 1, 8, 10)


@pytest.mark.parametrize("layer", [nn.Linear(64, 40), nn.Conv2d(6, 16, 3, padding=1)])
def test_lowrank_output_error_falls_as_rank_rises(layer) -> None:
    torch.manual_seed(0)
    x = torch.randn(8, 64) if isinstance(layer, nn.Linear) else torch.randn(8, 6, 8, 8)
    with torch.no_grad():
        ref = layer(x)
        full = min(layer.weight.shape[0], layer.weight[0].numel())  # 40 and 16
        errors = [float((factorize(layer, r)(x) - ref).norm() / ref.norm())
                  for r in (1, 4, 8, full)]
    assert all(a > b for a, b in itertools.pairwise(errors))
    assert errors[-1] < 1e-5  # full rank reproduces the layer


def test_energy_rank_keeps_the_asked_energy() -> None:
    sigma = torch.tensor([4.0, 2.0, 1.0, 1.0])  # energies 16, 4, 1, 1 of 22
    assert choose_rank(sigma, 0.2, "energy") == 2  # 20/22 >= 0.8
    assert choose_rank(sigma, 0.05, "energy") == 3
    assert choose_rank(sigma, 0.5, "ratio") == 2


@pytest.mark.parametrize("name", ["mlp", "lenet5", "resnet"])
def test_lowrank_run_has_fewer_params_and_flops_and_reloads(prune, tmp_path, name) -> None:
    from compression.measure import flops_per_layer

    model, _, session = prune(f"model={name}", "pruning=lowrank", "pruning.sparsity=0.6")
    full = build_model(session.rc.model, SPEC)
    assert session.extra_metrics["param_reduction"] > 0.2
    x = SPEC.example_input()
    assert flops_per_layer(model, x)[0] < 0.8 * flops_per_layer(full, x)[0]
    q = QUANTIZERS.build_config({"mode": "none"})
    path = tmp_path / "m.safetensors"
    save_artifact(model.eval(), path, model_cfg=session.rc.model, spec=SPEC, quant_cfg=q,
                  transforms=session.transforms)
    loaded, _ = load_artifact(path)
    batch = session.data.test_x[:8]
    with torch.no_grad():
        assert torch.equal(model(batch), loaded(batch))


def _mask_file(tmp_path, masks: dict[str, torch.Tensor]):
    path = tmp_path / "masks.safetensors"
    save_file({k: v.to(torch.uint8) for k, v in masks.items()}, str(path))
    return path


def test_user_masks_are_applied_as_given(prune, tmp_path) -> None:
    torch.manual_seed(1)
    given = {"fc1": torch.rand(300, 64) > 0.7, "fc3.weight": torch.rand(10, 100) > 0.5}
    path = _mask_file(tmp_path, given)
    model, _, session = prune("pruning=mask", f"pruning.path={path}", "finetune.epochs=1",
                                  "data.limit=128")
    assert torch.equal(model.fc1.weight != 0, given["fc1"])
    assert torch.equal(model.fc3.weight != 0, given["fc3.weight"])
    assert bool((model.fc2.weight != 0).all())  # no mask given: untouched
    expected = sum(int((~m).sum()) for m in given.values()) / (300 * 64 + 10 * 100)
    assert session.rc.pruning.sparsity == pytest.approx(expected)


def test_bad_mask_files_fail_before_training(compose_cfg, tmp_path) -> None:
    missing = RunConfig.from_cfg(compose_cfg("pruning=mask", "pruning.path=nowhere.safetensors"))
    model = build_model(ModelConfig(), SPEC)
    with pytest.raises(ConfigError, match=r"pruning.path='nowhere\.safetensors': no such file"):
        check(model, missing.pruning, SPEC.example_input())
    path = _mask_file(tmp_path, {"fc1": torch.ones(64, 300, dtype=torch.bool)})
    wrong = RunConfig.from_cfg(compose_cfg("pruning=mask", f"pruning.path={path}"))
    with pytest.raises(ConfigError, match=r"mask for 'fc1' has shape \(64, 300\), the weight "):
        check(model, wrong.pruning, SPEC.example_input())


@pytest.mark.parametrize("name", ["mlp", "lenet5", "resnet"])
def test_small_dense_width_matches_the_nonzero_count(name) -> None:
    cfg = ModelConfig(name=name)
    target = dense_params(cfg, SPEC, 1.0) // 5
    width = width_for_nonzero(cfg, SPEC, target)
    assert width < 1
    got = dense_params(cfg, SPEC, width)
    step = dense_params(cfg, SPEC, width * 1.1) - dense_params(cfg, SPEC, width * 0.9)
    assert abs(got - target) <= step  # as close as the width's rounding allows


def test_small_dense_option_sets_the_width_and_keeps_method_none(compose_cfg) -> None:
    rc = RunConfig.from_cfg(compose_cfg("pruning=small_dense", "model=lenet5",
                                        "pruning.match_nonzero=5000"))
    assert rc.pruning.method == "none" and rc.model.width < 1
    assert abs(dense_params(rc.model, SPEC, rc.model.width) - 5000) < 500
    with pytest.raises(ConfigError, match="out of reach") as err:
        RunConfig.from_cfg(compose_cfg("pruning=small_dense", "pruning.match_nonzero=10000000"))
    assert "\n" not in str(err.value)
