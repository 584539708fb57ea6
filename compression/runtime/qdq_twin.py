"""torch's int8 model (torch.ao FX-converted: static_int8 / qat_int8) -> the QDQ ONNX graph of
that same model, so ORT runs torch's quantization choices instead of re-calibrating its own.

1. `float_twin`: a float GraphModule computing what the int8 model computes: every quantized
   Conv / Linear becomes its float op on the dequantized int8 weight (fake-quantized with the
   weight's own per-channel or per-tensor scales, so the export carries them), and every value
   the int8 model holds quantized is fake-quantized with the scale and zero point it holds
   (read from one probe forward pass of the int8 model, so each op's output qparams - the
   calibrated or QAT-learned activation ranges, the reduce_range 7-bit ones included - are
   the int8 model's own, whatever op made them).
2. torch.onnx's TorchScript exporter writes each fake-quantize as QuantizeLinear ->
   DequantizeLinear (the dynamo exporter has no conversion for fake_quantize_*).
3. `finish`: the weight QuantizeLinears are folded into int8 initializers and each Conv / Gemm /
   MatMul bias into int32 (scale = input scale x weight scale, as ORT's own quantizer writes it),
   the form ORT's graph optimizer fuses into QLinearConv / QGemm int8 kernels.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from compression.core.errors import ConfigError
from compression.runtime.onnx_export import INPUT, OUTPUT, quiet

with quiet():
    import torch.ao.nn.intrinsic.quantized as nniq
    import torch.ao.nn.quantized as nnq

_CONV = {nnq.Conv1d: F.conv1d, nnq.Conv2d: F.conv2d, nnq.Conv3d: F.conv3d,
         nniq.ConvReLU1d: F.conv1d, nniq.ConvReLU2d: F.conv2d, nniq.ConvReLU3d: F.conv3d}
_LINEAR = (nnq.Linear, nniq.LinearReLU)
_RELU = (nniq.ConvReLU1d, nniq.ConvReLU2d, nniq.ConvReLU3d, nniq.LinearReLU)
# torch.ops.quantized.<op>(a, b, scale, zero_point) -> its float op (the output's qparams are
# applied after it, as for every quantized value)
_QUANTIZED_OPS: dict[str, Callable[..., torch.Tensor]] = {
    "add": operator.add, "add_relu": lambda a, b: torch.relu(a + b),
    "mul": operator.mul, "mul_relu": lambda a, b: torch.relu(a * b),
}



def _layer_norm(m: nn.Module) -> nn.Module:
    out = nn.LayerNorm(m.normalized_shape, eps=m.eps, elementwise_affine=m.weight is not None)
    if m.weight is not None:
        out.weight.data.copy_(m.weight)
        out.bias.data.copy_(m.bias)
    return out


# Other quantized modules -> the float module computing the same (their output qparams are
# applied after it, as for every quantized value).
_FLOAT: dict[type, Callable[[nn.Module], nn.Module]] = {
    nnq.LayerNorm: _layer_norm,
    nnq.Hardswish: lambda m: nn.Hardswish(),
    nnq.ReLU6: lambda m: nn.ReLU6(),
    nnq.Sigmoid: lambda m: nn.Sigmoid(),
    nnq.LeakyReLU: lambda m: nn.LeakyReLU(m.negative_slope),
    nnq.ELU: lambda m: nn.ELU(m.alpha),
    nnq.Softmax: lambda m: nn.Softmax(m.dim),
    nnq.Dropout: lambda m: nn.Identity(),
}


class _Weighted(nn.Module):
    """A quantized Conv / Linear as float: its int8 weight dequantized and fake-quantized with
    the weight's own scales (an identity on these values that the exporter writes as Q/DQ)."""

    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        w = m.weight()
        self.per_channel = w.qscheme() in (torch.per_channel_affine,
                                           torch.per_channel_symmetric)
        self.register_buffer("weight", w.dequantize())
        if self.per_channel:
            self.register_buffer("w_scale", w.q_per_channel_scales().float())
            self.register_buffer("w_zero", w.q_per_channel_zero_points().int())
            self.axis = int(w.q_per_channel_axis())
        else:
            self.w_scale_t, self.w_zero_t = float(w.q_scale()), int(w.q_zero_point())
        b = m.bias()
        self.register_buffer("bias", None if b is None else b.detach().float())
        self.relu = isinstance(m, _RELU)
        self.conv = _CONV.get(type(m))
        if self.conv is not None:
            if getattr(m, "padding_mode", "zeros") != "zeros":
                raise ConfigError(f"runtime=onnxruntime: quantized {type(m).__name__} with "
                                  f"padding_mode={m.padding_mode} has no QDQ form here")
            self.args = (m.stride, m.padding, m.dilation, m.groups)

    def qweight(self) -> torch.Tensor:
        if self.per_channel:
            return torch.fake_quantize_per_channel_affine(self.weight, self.w_scale, self.w_zero,
                                                          self.axis, -128, 127)
        return torch.fake_quantize_per_tensor_affine(self.weight, self.w_scale_t, self.w_zero_t,
                                                     -128, 127)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.qweight()
        y = self.conv(x, w, self.bias, *self.args) if self.conv else F.linear(x, w, self.bias)
        return torch.relu(y) if self.relu else y


def _put(root: nn.Module, target: str, m: nn.Module) -> str:
    """Add `m` at the int8 model's own module path (so the ONNX initializers keep the model's
    names: conv1.weight, layer1.conv1.weight ...)."""
    *path, last = target.split(".")
    parent = root
    for part in path:
        if not hasattr(parent, part):
            parent.add_module(part, nn.Module())
        parent = getattr(parent, part)
    parent.add_module(last, m)
    return target


def _attr_path(m: nn.Module, target: str) -> object:
    *path, last = target.split(".")
    return getattr(m.get_submodule(".".join(path)), last)


def _probe(gm: fx.GraphModule, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every node's output on one forward pass of the int8 model."""
    seen: dict[str, torch.Tensor] = {}

    class Rec(fx.Interpreter):
        def run_node(self, n: fx.Node) -> object:
            out = super().run_node(n)
            if isinstance(out, torch.Tensor):
                seen[n.name] = out
            return out

    with torch.no_grad():
        Rec(gm).run(x)
    return seen


def _qrange(dtype: torch.dtype) -> tuple[int, int]:
    if dtype == torch.quint8:
        return 0, 255
    if dtype == torch.qint8:
        return -128, 127
    raise ConfigError(f"runtime=onnxruntime: an activation quantized to {dtype} has no QDQ "
                      "form here (quint8 / qint8 only)")


def float_twin(quantized: nn.Module, example: torch.Tensor) -> fx.GraphModule:
    """The float + fake-quantize graph computing what `quantized` (an FX-converted torch.ao
    int8 GraphModule) computes, with its weights, scales and zero points."""
    if not isinstance(quantized, fx.GraphModule):
        raise ConfigError("runtime=onnxruntime: static/QAT int8 models are carried into ONNX "
                          f"from torch.ao's FX-converted GraphModule, not {type(quantized)}")
    outs = _probe(quantized, example)
    modules = dict(quantized.named_modules())
    root = nn.Module()
    graph = fx.Graph()
    env: dict[str, fx.Node] = {}

    def arg(a: object) -> object:
        return fx.node.map_arg(a, lambda n: env[n.name])

    for node in quantized.graph.nodes:
        if node.op == "placeholder":
            new = graph.placeholder(node.name)
        elif node.op == "output":
            graph.output(arg(node.args[0]))
            continue
        elif node.op == "get_attr":  # a float tensor the model uses (a class token, ...);
            # scales / zero points are read from the probe instead and dropped as dead code
            val = _attr_path(quantized, str(node.target))
            name = "attr_" + str(node.target).replace(".", "_")
            if isinstance(val, torch.Tensor):
                root.register_buffer(name, val.dequantize() if val.is_quantized else val)
            else:
                setattr(root, name, val)
            new = graph.get_attr(name)
        elif node.op == "call_function" and node.target is torch.quantize_per_tensor:
            new = env[node.args[0].name]  # the fake-quantize below is the quantize
        elif node.op == "call_method" and node.target == "dequantize":
            new = env[node.args[0].name]
        elif node.op == "call_function" and str(node.target).startswith("quantized."):
            op = str(node.target).split(".")[1]
            if op not in _QUANTIZED_OPS:
                raise ConfigError(f"runtime=onnxruntime: torch's quantized op {node.target} "
                                  "has no QDQ form here")
            new = graph.call_function(_QUANTIZED_OPS[op], arg(tuple(node.args[:2])))
        elif node.op == "call_module":
            m = modules[str(node.target)]
            if isinstance(m, (*_CONV, *_LINEAR)):
                name = _put(root, str(node.target), _Weighted(m))
            elif type(m) in _FLOAT:
                name = _put(root, str(node.target), _FLOAT[type(m)](m))
            elif type(m).__module__.startswith("torch.ao.nn"):
                raise ConfigError(f"runtime=onnxruntime: torch's quantized module "
                                  f"{type(m).__name__} ({node.target}) has no QDQ form here")
            else:  # a float module torch runs on int8 tensors (pooling, Identity, ReLU, ...)
                name = _put(root, str(node.target), m)
            new = graph.call_module(name, arg(node.args), arg(node.kwargs))
        else:  # flatten, pooling, relu, reshape ... on (fake-)quantized values
            new = graph.create_node(node.op, node.target, arg(node.args), arg(node.kwargs))
        out = outs.get(node.name)
        if out is not None and out.is_quantized and node.op != "placeholder":
            if out.qscheme() not in (torch.per_tensor_affine, torch.per_tensor_symmetric):
                raise ConfigError(f"runtime=onnxruntime: activation {node.name} is quantized "
                                  f"{out.qscheme()}; only per-tensor activations have a form here")
            lo, hi = _qrange(out.dtype)
            new = graph.call_function(torch.fake_quantize_per_tensor_affine,
                                      (new, float(out.q_scale()), int(out.q_zero_point()), lo, hi))
        env[node.name] = new
    twin = fx.GraphModule(root, graph)
    twin.graph.eliminate_dead_code()
    twin.recompile()
    return twin.eval()


def export_qdq(quantized: nn.Module, example: torch.Tensor, path: Path, opset: int) -> Path:
    """Write torch's int8 model as a QDQ ONNX file (int8 weights, int32 biases) at `path`."""
    import onnx

    twin = float_twin(quantized, example)
    x = torch.cat([example, example])
    path.parent.mkdir(parents=True, exist_ok=True)
    with quiet(), torch.no_grad():
        torch.onnx.export(twin, (x,), str(path), input_names=[INPUT], output_names=[OUTPUT],
                          dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
                          opset_version=max(opset, 13), dynamo=False)
    model = finish(onnx.load(str(path)))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


# ---------------------------------------------------------------------------- ONNX clean-up
def finish(model: object) -> object:
    """Constants into initializers, weight QuantizeLinears folded into int8 initializers, float
    biases of Conv / Gemm fed by DequantizeLinears quantized to int32."""
    import onnx
    from onnx import numpy_helper as nh

    graph = model.graph  # type: ignore[attr-defined]
    consts = {t.name: nh.to_array(t) for t in graph.initializer}
    keep = []
    for node in graph.node:  # Constant nodes -> known values
        if node.op_type == "Constant" and len(node.attribute) == 1 \
                and node.attribute[0].name == "value":
            consts[node.output[0]] = nh.to_array(node.attribute[0].t)
        elif node.op_type == "Identity" and node.input[0] in consts:  # a shared constant
            consts[node.output[0]] = consts[node.input[0]]
        else:
            keep.append(node)
    producer = {o: n for n in keep for o in n.output}
    nodes, renamed = [], {}
    for node in keep:
        if node.op_type == "QuantizeLinear" and all(i in consts for i in node.input):
            nodes.append(None)  # folded: its output becomes an int8 initializer
            x, scale, zero = (consts[i] for i in node.input)
            axis = _attr(node, "axis", 1)
            renamed[node.output[0]] = f"{node.input[0]}_quantized"  # ORT's own naming
            consts[renamed[node.output[0]]] = _quantize(x, scale, zero, axis)
            continue
        nodes.append(node)
    nodes = [n for n in nodes if n is not None]
    for node in nodes:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
    for node in nodes:  # float bias -> DequantizeLinear(int32, in_scale x w_scale)
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3 or not node.input[2] \
                or node.input[2] not in consts or consts[node.input[2]].dtype != np.float32:
            continue
        dq_x, dq_w = producer.get(node.input[0]), producer.get(node.input[1])
        if not (dq_x and dq_w and dq_x.op_type == dq_w.op_type == "DequantizeLinear"):
            continue
        if node.op_type == "Gemm" and (_attr(node, "transB", 0) != 1
                                       or _attr(node, "alpha", 1.0) != 1.0
                                       or _attr(node, "beta", 1.0) != 1.0):
            continue
        b = consts[node.input[2]]
        scale = (consts[dq_x.input[1]] * consts[dq_w.input[1]]).astype(np.float32)
        scale = np.broadcast_to(scale, b.shape).astype(np.float32)
        q = np.round(b / scale).astype(np.int64)
        if np.abs(q).max(initial=0) >= 2**31:
            continue  # keeps its float bias rather than overflowing int32
        name = f"{node.input[2]}_quantized"
        consts[name] = q.astype(np.int32)
        consts[f"{name}_scale"] = scale.copy()
        consts[f"{name}_zero_point"] = np.zeros(b.shape, np.int32)
        out = f"{node.input[2]}_dequantized"
        nodes.append(onnx.helper.make_node(
            "DequantizeLinear", [name, f"{name}_scale", f"{name}_zero_point"], [out],
            name=f"{node.name}_bias_dq", axis=0))
        node.input[2] = out
    nodes = _toposort(nodes, {i.name for i in graph.input} | set(consts))
    used = {i for n in nodes for i in n.input}
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(nh.from_array(np.asarray(v), k) for k, v in consts.items()
                             if k in used)
    return model


def _attr(node: object, name: str, default: object) -> object:
    import onnx

    for a in node.attribute:  # type: ignore[attr-defined]
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _quantize(x: np.ndarray, scale: np.ndarray, zero: np.ndarray, axis: int) -> np.ndarray:
    """ONNX QuantizeLinear (round half to even, saturate) on constants."""
    shape = [1] * x.ndim
    if scale.ndim == 1 and scale.size > 1:
        shape[axis] = scale.size
    info = np.iinfo(zero.dtype)
    q = np.rint(x / scale.reshape(shape)) + zero.reshape(shape).astype(np.float64)
    return np.clip(q, info.min, info.max).astype(zero.dtype)


def _toposort(nodes: list, known: set[str]) -> list:
    out, pending, known = [], list(nodes), set(known)
    while pending:
        ready = [n for n in pending if all(not i or i in known for i in n.input)]
        if not ready:
            raise ConfigError("runtime=onnxruntime: the QDQ graph has a cycle or a missing input")
        for n in ready:
            out.append(n)
            known.update(n.output)
        pending = [n for n in pending if n not in ready]
    return out
