"""Per-layer weight views read every kind of layer the pipeline produces."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compression.analysis.layers import layer_weights
from compression.data import DataSpec
from compression.models.build import ModelConfig, build_model
from compression.pruning.sparse_kernel import SparseLinear
from compression.quantization import QUANTIZERS

SPEC = DataSpec("digits", 1, 8, 10)


@pytest.mark.parametrize("cfg", [{"mode": "none"}, {"mode": "dynamic_int8"},
                                 {"mode": "dynamic_int8", "backend": "torchao"},
                                 {"mode": "lowbit", "bits": 4}])
def test_weights_of_quantized_layers_are_read_dequantized(cfg: dict) -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="mlp"), SPEC).eval()
    qcfg = QUANTIZERS.build_config(cfg)
    quantized = QUANTIZERS.get(qcfg.mode).handler.quantize(model, qcfg, None).model
    weights = layer_weights(quantized)
    assert {k: v.shape for k, v in weights.items()} == {
        "fc1": (300 * 64,), "fc2": (100 * 300,), "fc3": (10 * 100,)}
    fp32 = model.fc2.weight.detach().flatten().numpy()
    assert abs(weights["fc2"] - fp32).max() < 0.05  # int8 / 4-bit rounding, not garbage


def test_sparse_kernel_layers_are_read_as_their_dense_weight() -> None:
    lin = nn.Linear(6, 4)
    weights = layer_weights(nn.Sequential(SparseLinear.from_linear(lin)))
    assert (weights["0"] == lin.weight.detach().flatten().numpy()).all()
