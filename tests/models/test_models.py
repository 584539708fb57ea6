"""Built-in models fit both datasets, shrink with width, and user factories plug in."""

from __future__ import annotations

import pytest
import torch

from compression.core.errors import ConfigError
from compression.data import DataSpec
from compression.models.build import MODELS, ModelConfig, build_model, check_fits

SPECS = [DataSpec("digits", 1, 8, 10), DataSpec("fashion_mnist", 1, 28, 10)]
TEXT = DataSpec("text", 1, 16, 256, (16,), sequence=True)  # byte windows: model=charlm
SEQUENCE_MODELS = {"charlm"}


def _fits(name: str) -> list[DataSpec]:
    return [TEXT] if name in SEQUENCE_MODELS else SPECS


PAIRS = [(name, spec) for name in sorted(MODELS) for spec in _fits(name)]


def _params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize(("name", "spec"), PAIRS, ids=[f"{n}-{s.name}" for n, s in PAIRS])
def test_builtin_models_map_inputs_to_class_scores(name, spec) -> None:
    model = build_model(ModelConfig(name=name), spec)
    # sequence data: one score per class at every position, (N, C, T)
    want = (3, spec.num_classes, *spec.input_shape) if spec.sequence else (3, spec.num_classes)
    assert model(spec.example_input(3)).shape == want
    check_fits(model, spec, ModelConfig(name=name))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_width_multiplier_shrinks_the_model(name) -> None:
    spec = _fits(name)[0]
    full = _params(build_model(ModelConfig(name=name, width=1.0), spec))
    half = _params(build_model(ModelConfig(name=name, width=0.5), spec))
    assert half < 0.5 * full


def test_mlp_is_lenet_300_100() -> None:
    m = build_model(ModelConfig(name="mlp"), SPECS[1])
    assert [m.fc1.out_features, m.fc2.out_features, m.fc3.out_features] == [300, 100, 10]


def test_user_factory_via_target() -> None:
    cfg = ModelConfig.from_dict({"_target_": "factories.tiny_mlp", "hidden": 7})
    model = build_model(cfg, SPECS[0])
    assert model[1].out_features == 7 and cfg.name == "tiny_mlp"
    assert cfg.to_dict()["hidden"] == 7


def test_user_factory_errors_are_one_line() -> None:
    with pytest.raises(ConfigError, match="cannot be imported"):
        build_model(ModelConfig.from_dict({"_target_": "nowhere.factory"}), SPECS[0])
    with pytest.raises(ConfigError, match="not a valid key for a built-in model"):
        ModelConfig.from_dict({"name": "mlp", "hidden": 3})
    # a keyword the factory does not take fails before any run opens, naming target and kwargs
    bad = ModelConfig.from_dict({"_target_": "factories.tiny_mlp", "hiden": 7})
    with pytest.raises(ConfigError, match=r"factories.tiny_mlp.*'hiden': 7.*TypeError"):
        build_model(bad, SPECS[0])


def test_a_model_that_does_not_fit_the_data_is_refused_in_one_line() -> None:
    spec = DataSpec("digits", 1, 8, 10)
    wrong_input = ModelConfig(name="custom", target="torch.nn.Linear",
                              kwargs={"in_features": 3, "out_features": 10})
    with pytest.raises(ConfigError, match=r"cannot run on digits inputs of shape \(1, 1, 8, 8\): "
                                          r"RuntimeError: mat1 and mat2"):
        check_fits(build_model(wrong_input, spec), spec, wrong_input)
    seven = ModelConfig(name="custom", target="compression.models.build.example_user_model",
                        kwargs={"num_classes": 7})
    with pytest.raises(ConfigError, match=r"gives \(1, 7\) for a \(1, 1, 8, 8\) input; digits "
                                          r"needs \(1, 10\)"):
        check_fits(build_model(seven, spec), spec, seven)
    for name in ("mlp", "lenet5", "resnet"):  # the built-in models fit, and stay in train mode
        model = build_model(ModelConfig(name=name), spec)
        check_fits(model, spec, ModelConfig(name=name))
        assert model.training
