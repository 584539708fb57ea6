"""What the int8 modes do for speed, checked for correctness: fused dynamic Linear+ReLU, int8
through nn.Flatten, one packed weight copy per input shape (oneDNN's primitive cache), and
`engine: auto` picking, recording and reloading an engine."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from compression.artifact.format import load_artifact, save_artifact
from compression.models.build import ModelConfig
from compression.quantization import QUANTIZERS
from compression.quantization import _torch_ao as ao
from compression.training.loop import evaluate


def _quantize(values: dict, model: nn.Module, session) -> tuple[nn.Module, object]:
    cfg = QUANTIZERS.build_config(values)
    result = QUANTIZERS.get(cfg.mode).handler.quantize(model, cfg, session)
    return result.model, result.config


def _kinds(model: nn.Module) -> dict[str, str]:
    return {name: m._get_name() for name, m in model.named_modules() if name}


def test_dynamic_fuses_linear_relu_pairs(trained, session) -> None:
    model = trained("mlp")
    q, _ = _quantize({"mode": "dynamic_int8"}, model, session)
    kinds = _kinds(q)
    assert kinds["fc1"] == kinds["fc2"] == "DynamicQuantizedLinearReLU"
    assert kinds["fc3"] == "DynamicQuantizedLinear"  # no ReLU after the last layer
    assert kinds["relu1"] == kinds["relu2"] == "Identity"
    assert isinstance(model.relu1, nn.ReLU)  # the fp32 model is untouched
    x = session.data.test_x
    with torch.inference_mode():
        assert (q(x) - model(x)).abs().max() < 0.5  # still the same function, int8-rounded


class _SharedRelu(nn.Module):
    """One ReLU module after two Linears: fusing it would turn both uses into Identity."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(64, 32), nn.Linear(32, 32), nn.Linear(32, 10)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.relu(self.fc2(self.relu(self.fc1(x.flatten(1))))))


def test_dynamic_leaves_a_shared_relu_alone(session) -> None:
    torch.manual_seed(0)
    model = _SharedRelu().eval()
    q, _ = _quantize({"mode": "dynamic_int8"}, model, session)
    assert "ReLU" not in _kinds(q)["fc1"] and isinstance(q.relu, nn.ReLU)
    x = session.data.test_x[:64]
    with torch.inference_mode():
        assert (q(x) - model(x)).abs().max() < 0.1


def test_static_keeps_int8_through_flatten(trained, session) -> None:
    q, _ = _quantize({"mode": "static_int8", "calibration_batches": 2}, trained("lenet5"),
                     session)
    dequantize = [n for n in q.graph.nodes if n.target == "dequantize"]
    assert len(dequantize) == 1  # only at the output: no dequantize -> flatten -> quantize
    assert not any(k.startswith("flatten") for k in q.state_dict())


@pytest.mark.parametrize("engine", ["x86", "onednn"])
def test_per_shape_packing_switches_shapes_without_changing_results(engine, trained, session
                                                                    ) -> None:
    q, _ = _quantize({"mode": "static_int8", "calibration_batches": 2, "engine": engine},
                     trained("lenet5"), session)
    x = session.data.test_x
    with torch.inference_mode():
        one, seven, full = q(x[:1]), q(x[:7]), q(x)
        assert torch.equal(q(x[:1]), one) and torch.equal(q(x[:7]), seven)
        assert torch.equal(full[:7], q(x)[:7])
    assert len(q._per_shape_packing.packs) == 3  # one packed copy per shape seen

    # A copy starts with no cached copies of its own; loading other weights drops the copies.
    other = copy.deepcopy(q)
    assert other._per_shape_packing is not q._per_shape_packing
    assert not other._per_shape_packing.packs
    retrained, _ = _quantize({"mode": "static_int8", "calibration_batches": 1,
                              "engine": engine}, trained("lenet5"), session)
    with torch.inference_mode():
        retrained(x[:1])
        retrained(x[:7])  # both shapes have copies holding the old weights now
        retrained.load_state_dict(q.state_dict())
        assert torch.equal(retrained(x[:1]), one) and torch.equal(retrained(x[:7]), seven)


@pytest.mark.parametrize(
    ("model_name", "values"),
    [("mlp", {"mode": "dynamic_int8"}),
     ("lenet5", {"mode": "static_int8", "calibration_batches": 2}),
     ("lenet5", {"mode": "static_int8", "calibration_batches": 2, "scheme": "affine"}),
     ("mlp", {"mode": "qat_int8", "epochs": 1})],
    ids=["dynamic", "static", "static-affine", "qat"],
)
def test_engine_auto_is_chosen_recorded_and_reloaded(model_name, values, trained, session,
                                                     tmp_path) -> None:
    model = trained(model_name)
    result = QUANTIZERS.get(values["mode"]).handler.quantize(
        model, QUANTIZERS.build_config({**values, "engine": "auto"}), session)
    q, cfg, metrics = result.model, result.config, result.metrics
    candidates = ao.auto_candidates(values.get("scheme", "symmetric") == "symmetric")
    assert cfg.engine in candidates  # `auto` resolved to what was fastest here
    timed = {k.removeprefix("quant_auto_").removesuffix("_ms")
             for k in metrics if k.startswith("quant_auto_")}
    assert timed == set(candidates)
    assert all(metrics[f"quant_auto_{e}_ms"] > 0 for e in candidates)
    if values.get("scheme") == "affine":
        assert "onednn" not in timed  # oneDNN refuses affine weights

    path = tmp_path / "m.safetensors"
    save_artifact(q, path, model_cfg=ModelConfig(name=model_name), spec=session.data.spec,
                  quant_cfg=cfg)
    reloaded, meta = load_artifact(path)
    assert meta["quantization"]["engine"] == cfg.engine  # reloads with the chosen kernels
    x, y = session.data.test_x, session.data.test_y
    with torch.inference_mode():
        assert torch.equal(q(x), reloaded(x))
    assert evaluate(reloaded, x, y) == evaluate(q, x, y)


def test_engine_auto_without_data_means_x86(trained) -> None:
    cfg = QUANTIZERS.build_config({"mode": "dynamic_int8", "engine": "auto"})
    result = QUANTIZERS.get("dynamic_int8").handler.quantize(trained("mlp"), cfg, None)
    assert result.config.engine == ao.DEFAULT_ENGINE
    assert result.tags == {"quantization_engine": ao.DEFAULT_ENGINE}
    assert cfg.engine == "auto"  # the config asked for is left as it was (logged as params)


def test_pick_engine_keeps_the_fastest() -> None:
    class Sleepy(nn.Module):
        def __init__(self, seconds: float) -> None:
            super().__init__()
            self.seconds = seconds

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            import time

            time.sleep(self.seconds)
            return x

    # delays far apart, so that a busy machine's sleep overshoot cannot reorder the medians
    delays = {"x86": 0.015, "fbgemm": 0.001, "onednn": 0.006}
    engine, model, scores = ao.pick_engine(lambda e: Sleepy(delays[e]), list(delays),
                                           [torch.zeros(1), torch.zeros(4)], budget_s=0.3)
    assert engine == "fbgemm" and model.seconds == delays["fbgemm"]
    assert scores["fbgemm"] < scores["onednn"] < scores["x86"]


def test_an_artifact_from_before_int8_flatten_still_loads(trained, session, tmp_path,
                                                          monkeypatch) -> None:
    """Static artifacts written while nn.Flatten ran as dequantize -> flatten -> quantize hold
    that requantize's qparams; the current graph has no such step and drops them on load."""
    values = {"mode": "static_int8", "calibration_batches": 2}
    with monkeypatch.context() as m:
        m.setattr(ao, "flatten_as_function", lambda model: model)  # the old tracing
        old, cfg = _quantize(values, trained("lenet5"), session)
    assert any(k.startswith("flatten_") for k in old.state_dict())
    path = tmp_path / "old.safetensors"
    save_artifact(old, path, model_cfg=ModelConfig(name="lenet5"), spec=session.data.spec,
                  quant_cfg=cfg)
    reloaded, _ = load_artifact(path)
    assert not any(k.startswith("flatten_") for k in reloaded.state_dict())
    x, y = session.data.test_x, session.data.test_y
    assert abs(evaluate(reloaded, x, y) - evaluate(old, x, y)) <= 0.01
    with pytest.raises(RuntimeError, match="Missing key"):  # a really missing key still fails
        state = reloaded.state_dict()
        del state["conv1_input_scale_0"]
        reloaded.load_state_dict(state)
