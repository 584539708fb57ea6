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
3. `finish` (graph.py): the weight QuantizeLinears are folded into int8 initializers and
   each Conv / Gemm / MatMul bias into int32 (scale = input scale x weight scale, as ORT's own
   quantizer writes it), the form ORT's graph optimizer fuses into QLinearConv / QGemm int8
   kernels.

The float stand-ins for torch.ao's quantized modules live in layers.py.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import fx, nn

from compression.core.errors import ConfigError
from compression.runtime.onnx_export import INPUT, OUTPUT, quiet
from compression.runtime.qdq.graph import finish
from compression.runtime.qdq.layers import CONV, FLOAT, LINEAR, QUANTIZED_OPS, Weighted

__all__ = ["export_qdq", "finish", "float_twin"]


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
            if op not in QUANTIZED_OPS:
                raise ConfigError(f"runtime=onnxruntime: torch's quantized op {node.target} "
                                  "has no QDQ form here")
            new = graph.call_function(QUANTIZED_OPS[op], arg(tuple(node.args[:2])))
        elif node.op == "call_module":
            m = modules[str(node.target)]
            if isinstance(m, (*CONV, *LINEAR)):
                name = _put(root, str(node.target), Weighted(m))
            elif type(m) in FLOAT:
                name = _put(root, str(node.target), FLOAT[type(m)](m))
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
