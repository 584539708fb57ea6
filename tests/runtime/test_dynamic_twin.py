"""dynamic_twin: torch.ao's dynamic int8 model carried into ONNX computes what torch computes
(its int8 weights, its 7- or 8-bit activation range), on both exporters, with the Linear
layers torch keeps in float kept in float."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from compression.quantization import _torch_ao as ao
from compression.runtime.base import OnnxConfig
from compression.runtime.dynamic_twin import activation_qmax, dynamic_layers, export_dynamic
from compression.runtime.onnx_export import INPUT, export_onnx


class _Net(nn.Module):
    """Linear+ReLU pairs (fused by torch.ao), a plain Linear, and an attention block whose
    out_proj torch.ao leaves in float (NonDynamicallyQuantizableLinear)."""

    def __init__(self, attention: bool) -> None:
        super().__init__()
        self.fc1, self.relu1 = nn.Linear(20, 32), nn.ReLU()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True) if attention else None
        self.fc2, self.relu2 = nn.Linear(32, 24), nn.ReLU()
        self.fc3 = nn.Linear(24, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu1(self.fc1(x))
        if self.attn is not None:
            t = h.reshape(h.shape[0], 4, 8)
            h = h + self.attn(t, t, t, need_weights=False)[0].reshape(h.shape[0], 32)
        return self.fc3(self.relu2(self.fc2(h)))


def _twin(tmp_path, model: nn.Module, engine: str, exporter: str) -> tuple[nn.Module, str]:
    torch.manual_seed(0)
    x = torch.randn(1, 20)
    quantized = ao.quantize_dynamic_int8(copy.deepcopy(model), ["linear"], engine)
    fp32 = export_onnx(model, x, tmp_path / "fp32.onnx", OnnxConfig(exporter=exporter))
    export_dynamic(quantized, fp32, tmp_path / "int8.onnx")
    return quantized, str(tmp_path / "int8.onnx")


# (the TorchScript exporter has no form of attention's fused fast path)
@pytest.mark.parametrize(("exporter", "attention"),
                         [("dynamo", False), ("dynamo", True), ("torchscript", False)])
def test_ort_computes_what_torch_computes(tmp_path, exporter, attention) -> None:
    torch.manual_seed(1)
    model = _Net(attention).eval()
    quantized, path = _twin(tmp_path, model, "x86", exporter)
    x = torch.randn(64, 20) * 2
    with torch.inference_mode():
        want = quantized(x).numpy()
        fp32 = model(x).numpy()
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = sess.run(None, {INPUT: x.numpy()})[0]
    # torch's int8 arithmetic, not the fp32 one: far closer to torch's int8 than int8 is to fp32
    err, quant_err = np.abs(got - want).max(), np.abs(fp32 - want).max()
    assert err < 1e-4 * max(1.0, float(np.abs(want).max())), (err, quant_err)
    assert quant_err > 100 * err
    graph = onnx.load(path).graph
    n_int8 = sum(n.op_type == "MatMulInteger" for n in graph.node)
    assert n_int8 == len(dynamic_layers(quantized)) == 3  # attention's out_proj stays float
    assert "DynamicQuantizeLinear" not in {n.op_type for n in graph.node}  # 7-bit range ops


@pytest.mark.parametrize("engine", [e for e in ("x86", "fbgemm", "onednn", "qnnpack")
                                    if e in torch.backends.quantized.supported_engines])
def test_activation_range_is_measured_per_engine(engine) -> None:
    # measured on torch 2.13: x86, fbgemm and oneDNN quantize dynamic activations to 7 bits
    # (reduce_range), QNNPACK to 8; the twin finds it by running a layer, not by the name
    torch.manual_seed(0)
    quantized = ao.quantize_dynamic_int8(nn.Sequential(nn.Linear(16, 8)), ["linear"], engine)
    try:
        assert activation_qmax(dynamic_layers(quantized)) == (255 if engine == "qnnpack"
                                                              else 127)
    finally:
        ao.set_engine("x86")


def test_eight_bit_engine_matches_too(tmp_path) -> None:
    if "qnnpack" not in torch.backends.quantized.supported_engines:
        pytest.skip("this torch build has no QNNPACK")
    torch.manual_seed(2)
    model = _Net(False).eval()
    try:
        quantized, path = _twin(tmp_path, model, "qnnpack", "dynamo")
        x = torch.randn(32, 20)
        with torch.inference_mode():
            want = quantized(x).numpy()
    finally:
        ao.set_engine("x86")
    got = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(
        None, {INPUT: x.numpy()})[0]
    assert np.abs(got - want).max() < 1e-4 * max(1.0, float(np.abs(want).max()))


def test_activation_range_skips_a_layer_pruned_to_zero() -> None:
    # an all-zero weight computes the same at 7 and 8 bits: the next layer decides
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 8), nn.Linear(8, 4), nn.Linear(4, 2))
    nn.init.zeros_(model[0].weight)
    try:
        quantized = ao.quantize_dynamic_int8(model, ["linear"], "qnnpack"
                                             if "qnnpack" in torch.backends.quantized.
                                             supported_engines else "x86")
        want = 255 if torch.backends.quantized.engine == "qnnpack" else 127
        assert activation_qmax(dynamic_layers(quantized)) == want
    finally:
        ao.set_engine("x86")
