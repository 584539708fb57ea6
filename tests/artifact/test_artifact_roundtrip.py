"""The artifact stores sparse and int8 models compactly and reloads to identical outputs."""

from __future__ import annotations

import pytest
import torch

from compression.artifact.format import load_artifact, read_meta, save_artifact
from compression.data import DataSpec
from compression.models.build import MODELS, ModelConfig, build_model, prunable_layers
from compression.pruning.unstructured import magnitude_masks
from compression.quantization import QUANTIZERS

SPEC = DataSpec("digits", 1, 8, 10)
TEXT = DataSpec("text", 1, 16, 256, (16,), sequence=True)  # byte windows, for model=charlm
NONE = QUANTIZERS.build_config({"mode": "none"})
INT8 = QUANTIZERS.build_config({"mode": "dynamic_int8"})


def _spec(name: str) -> DataSpec:
    return TEXT if name == "charlm" else SPEC


def _model(name: str = "mlp", sparsity: float = 0.0) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=name), _spec(name)).eval()
    if sparsity:
        magnitude_masks(prunable_layers(model), sparsity, "layer").apply(model)
    return model


def _save(tmp_path, model, name="m", quant=NONE, **kw):
    path = tmp_path / f"{name}.safetensors"
    model_name = kw.pop("model_name", "mlp")
    save_artifact(model, path, model_cfg=ModelConfig(name=model_name),
                  spec=_spec(model_name), quant_cfg=quant, **kw)
    return path


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("quant", [NONE, INT8], ids=["fp32", "dynamic_int8"])
def test_roundtrip_gives_identical_outputs(tmp_path, name, quant) -> None:
    model = _model(name, sparsity=0.7)
    if quant.mode != "none":
        model = QUANTIZERS.get(quant.mode).handler.quantize(model, quant, None).model
    path = _save(tmp_path, model, quant=quant, model_name=name)
    loaded, meta = load_artifact(path)
    x = torch.randint(0, 256, (4, 16)).float() if name == "charlm" else torch.randn(4, 1, 8, 8)
    assert torch.equal(model(x), loaded(x))
    assert meta["model"]["name"] == name


def test_sparse_weights_cost_less_than_dense_fp32(tmp_path) -> None:
    dense = _save(tmp_path, _model(), "dense", sparse=False).stat().st_size
    pruned = _save(tmp_path, _model(sparsity=0.9), "pruned").stat().st_size
    # 10% fp32 values + 1 bit per weight ~= 0.1 * 4 + 0.125 = 0.525 bytes/weight vs 4.
    assert pruned < 0.16 * dense


def test_dynamic_int8_mlp_is_at_most_030_of_dense(tmp_path) -> None:
    dense = _save(tmp_path, _model(), "dense", sparse=False).stat().st_size
    q = QUANTIZERS.get("dynamic_int8").handler.quantize(_model(), INT8, None).model
    assert _save(tmp_path, q, "int8", quant=INT8).stat().st_size <= 0.3 * dense


def test_zeros_stay_zeros_through_int8_and_both_savings_add_up(tmp_path) -> None:
    handler = QUANTIZERS.get("dynamic_int8").handler
    q_dense = handler.quantize(_model(), INT8, None).model
    q_sparse = handler.quantize(_model(sparsity=0.9), INT8, None).model
    w = q_sparse.fc1.weight().int_repr()
    assert int((w == 0).sum()) >= round(0.9 * w.numel())
    dense_bytes = _save(tmp_path, q_dense, "a", quant=INT8).stat().st_size
    assert _save(tmp_path, q_sparse, "b", quant=INT8).stat().st_size < 0.4 * dense_bytes


def test_foreign_file_is_rejected_with_a_clear_message(tmp_path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(ValueError, match="not a compression artifact"):
        read_meta(path)
