"""torch's dynamic int8 model -> the ONNX graph of that same arithmetic, so ORT's dynamic int8
scores what the eager figures measured (as qdq/twin.py does for static / QAT).

ORT's own `quantize_dynamic` differs from torch.ao's in two ways that moved accuracy by up to
0.84 pt on a 359-image test split: it quantizes the weights itself (its own scales), and its
DynamicQuantizeLinear quantizes activations to 8 bits (0..255), where torch's x86 / fbgemm /
oneDNN kernels use 7 (0..127, `reduce_range`: u8 x s8 pairs summed in int16 by vpmaddubsw
cannot saturate then, on CPUs with or without VNNI; QNNPACK uses 8). So:

1. the exported fp32 graph's MatMul / Gemm nodes are matched to torch's dynamic Linear layers
   by their weights (a node torch left in float, e.g. MultiheadAttention's out_proj, is
   excluded from quantization, as torch left it);
2. ORT's `quantize_dynamic` writes the int8 structure (MatMulInteger + scale Mul), whose weight,
   weight scale and zero point initializers are then replaced by torch's own;
3. each DynamicQuantizeLinear is replaced by the same per-tensor range computation torch
   does (ATen's ChooseQuantizationParams: range widened to
   include 0, scale = range / 127 but at least 6.1e-5, zero point from the minimum), measured
   on one of the model's own layers rather than assumed from the engine's name.

Cost (lenet5, one thread): the explicit range ops take 0.02 ms more per call at batch 1 and
about 4% at batch 256 than ORT's fused DynamicQuantizeLinear.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from compression.core.errors import ConfigError
from compression.core.lazy import nn, np, torch
from compression.runtime.onnx_export import quiet

SMALL_SCALE = 6.1e-5  # ATen's SMALL_SCALE_THRESHOLD: smaller activation scales are raised to it


def dynamic_layers(model: nn.Module) -> dict[str, nn.Module]:
    """torch.ao's dynamic int8 Linear layers of `model` (LinearReLU included), by name."""
    return {name: m for name, m in model.named_modules()
            if hasattr(getattr(m, "_packed_params", None), "_weight_bias")
            and type(m).__module__.startswith("torch.ao.nn.") and ".dynamic" in
            type(m).__module__}


@dataclass(frozen=True)
class _Int8:
    """One dynamic layer's int8 weight, unpacked once (torch unpacks on every call)."""

    module: nn.Module
    q: np.ndarray  # int8 (out, in)
    scale: np.ndarray  # scalar, or one per output row
    zero: np.ndarray  # int8, shaped like scale
    bias: np.ndarray | None
    deq: np.ndarray  # the dequantized weight (out, in)

    @property
    def step(self) -> np.ndarray:
        """The quantization step, broadcastable over (out, in)."""
        return self.scale[:, None] if self.scale.ndim else self.scale


def _unpack(layers: dict[str, nn.Module]) -> dict[str, _Int8]:
    out = {}
    for name, m in layers.items():
        w, b = m._packed_params._weight_bias()
        if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            scale = w.q_per_channel_scales().float().numpy().astype(np.float32)
            zero = w.q_per_channel_zero_points().numpy().astype(np.int8)
        else:
            scale = np.array(w.q_scale(), np.float32)
            zero = np.array(w.q_zero_point(), np.int8)
        q = w.int_repr().numpy()
        z = zero[:, None] if zero.ndim else zero
        deq = (q.astype(np.float32) - z) * (scale[:, None] if scale.ndim else scale)
        out[name] = _Int8(m, q, scale, zero, None if b is None else b.detach().float().numpy(),
                          deq)
    return out


def activation_qmax(layers: dict[str, nn.Module]) -> int:
    """127 or 255: the activation range torch's kernels quantize to, found by running the
    layers on a fixed input and comparing with both computations (the first layer whose
    output tells them apart decides; an all-zero pruned layer cannot, and any answer then
    computes the same)."""
    return _activation_qmax(_unpack(layers))


def _activation_qmax(layers: dict[str, _Int8]) -> int:
    gen = torch.Generator().manual_seed(0)
    for layer in layers.values():
        m, w, b = layer.module, layer.deq, layer.bias
        x = (torch.randn(4, w.shape[1], generator=gen) * 3 + 1).numpy()
        with torch.inference_mode():
            y = m(torch.from_numpy(x)).float().numpy()
        relu = "ReLU" in type(m).__name__
        errors = {}
        for qmax in (127, 255):
            scale, zero = _qparams(float(x.min()), float(x.max()), qmax)
            xq = np.clip(np.round(x / scale) + zero, 0, qmax)
            out = ((xq - zero) * scale) @ w.T + (0 if b is None else b)
            errors[qmax] = float(np.abs((np.maximum(out, 0) if relu else out) - y).max())
        best, other = sorted(errors, key=errors.__getitem__)
        tolerance = 1e-3 * max(1.0, float(np.abs(y).max()))
        if errors[best] > tolerance:
            raise ConfigError(f"runtime=onnxruntime: torch's dynamic int8 layer "
                              f"{type(m).__name__} computes neither 7- nor 8-bit per-tensor "
                              f"activations (errors {errors}); its ONNX form cannot reproduce it")
        if errors[other] > tolerance:
            return best
    return 127


def _qparams(lo: float, hi: float, qmax: int) -> tuple[float, float]:
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    raw = (hi - lo) / qmax
    zero = min(max(round(-lo / max(raw, np.finfo(np.float32).tiny)), 0), qmax)
    return max(raw, SMALL_SCALE), zero


def _match(w: np.ndarray, layers: dict[str, _Int8], prefer: str) -> str | None:
    """The dynamic layer whose int8 weight dequantizes to within quantization error of `w`
    (out, in), the one named like `prefer` first; None when none does."""
    for name in sorted(layers, key=lambda n: n != prefer):
        layer = layers[name]
        # torch's rounding error (half its step) plus ORT's (its step is no larger than 2x)
        if layer.deq.shape == w.shape and np.all(
                np.abs(layer.deq - w) <= 1.5 * layer.step + 1e-6):
            return name
    return None


def _initializers(graph: object) -> dict[str, object]:
    return {t.name: t for t in graph.initializer}  # type: ignore[attr-defined]


def _node_weight(node: object, inits: dict[str, object]) -> np.ndarray | None:
    """A MatMul / Gemm node's constant weight as (out, in), or None."""
    import onnx
    from onnx import numpy_helper

    if len(node.input) < 2 or node.input[1] not in inits:  # type: ignore[attr-defined]
        return None
    w = numpy_helper.to_array(inits[node.input[1]])  # type: ignore[attr-defined]
    if w.ndim != 2:
        return None
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}  # type: ignore[attr-defined]
    trans = node.op_type == "Gemm" and attrs.get("transB", 0)  # type: ignore[attr-defined]
    return w.astype(np.float32) if trans else w.T.astype(np.float32)


def _excluded(fp32: object, layers: dict[str, _Int8]) -> list[str]:
    """Names of the fp32 graph's MatMul / Gemm nodes that torch did not quantize."""
    graph = fp32.graph  # type: ignore[attr-defined]
    inits = _initializers(graph)
    out = []
    for node in graph.node:
        if node.op_type not in ("MatMul", "Gemm"):
            continue
        w = _node_weight(node, inits)
        if w is None or _match(w, layers, node.input[1].removesuffix(".weight")) is None:
            out.append(node.name)
    return out


def _carry_weights(model: object, layers: dict[str, _Int8], qmax: int) -> None:
    """Replace each MatMulInteger's weight, zero point and weight scale by torch's. With 8-bit
    activations the weights go in as uint8 (+128, zero point too): ORT's u8 x s8 MatMulInteger
    sums pairs of products in int16 (vpmaddubsw) and saturated, 0.04 off torch QNNPACK's
    logits on a 3-layer mlp; u8 x u8 runs another kernel and matched to 1e-7."""
    from onnx import numpy_helper

    graph = model.graph  # type: ignore[attr-defined]
    inits = _initializers(graph)
    for node in graph.node:
        if node.op_type != "MatMulInteger":
            continue
        b_name, b_zero = node.input[1], node.input[3] if len(node.input) > 3 else ""
        scale_name = b_name.replace("_quantized", "_scale")
        if b_name not in inits or scale_name not in inits or not b_zero:
            raise ConfigError(f"runtime=onnxruntime: ORT's dynamic int8 graph has no weight "
                              f"scale initializer {scale_name!r} for {b_name!r} (a changed "
                              "onnxruntime.quantization naming?)")
        ort_q = numpy_helper.to_array(inits[b_name]).astype(np.float32)  # (in, out)
        ort_s = numpy_helper.to_array(inits[scale_name]).astype(np.float32)
        ort_z = numpy_helper.to_array(inits[b_zero]).astype(np.float32)
        prefer = b_name.removesuffix("_quantized").removesuffix("_Transposed")
        name = _match(((ort_q - ort_z) * ort_s).T, layers, prefer.removesuffix(".weight"))
        if name is None:
            raise ConfigError(f"runtime=onnxruntime: no dynamic int8 layer of torch's model "
                              f"matches ONNX weight {prefer!r}")
        q, scale, zero = layers[name].q, layers[name].scale, layers[name].zero
        if qmax > 127:
            q, zero = ((x.astype(np.int16) + 128).astype(np.uint8) for x in (q, zero))
        for init_name, value in ((b_name, q.T.copy()), (scale_name, scale), (b_zero, zero)):
            inits[init_name].CopyFrom(numpy_helper.from_array(value, init_name))  # type: ignore[attr-defined]


def _torch_range(model: object, qmax: int) -> None:
    """Each DynamicQuantizeLinear -> torch's per-tensor quantization to 0..qmax (at 255 ORT's own
    op would do, but one form for both keeps one path tested)."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph  # type: ignore[attr-defined]
    consts = {"rq_zero": np.array(0.0, np.float32), "rq_qmax": np.array(float(qmax), np.float32),
              "rq_tiny": np.array(np.finfo(np.float32).tiny, np.float32),
              "rq_small": np.array(SMALL_SCALE, np.float32),
              "rq_qmin_u8": np.array(0, np.uint8), "rq_qmax_u8": np.array(qmax, np.uint8)}
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items())
    nodes = []
    for n in graph.node:
        if n.op_type != "DynamicQuantizeLinear":
            nodes.append(n)
            continue
        x, (y, y_scale, y_zero) = n.input[0], n.output
        p = f"{y}_r{qmax}_"

        def op(kind: str, ins: list[str], out: str, p: str = p, **kw: object) -> object:
            return helper.make_node(kind, ins, [out], name=p + out.removeprefix(p), **kw)

        nodes += [
            op("ReduceMin", [x], p + "min", keepdims=0),
            op("ReduceMax", [x], p + "max", keepdims=0),
            op("Min", [p + "min", "rq_zero"], p + "lo"),  # the range always holds 0
            op("Max", [p + "max", "rq_zero"], p + "hi"),
            op("Sub", [p + "hi", p + "lo"], p + "range"),
            op("Div", [p + "range", "rq_qmax"], p + "raw"),
            op("Max", [p + "raw", "rq_tiny"], p + "raw_nz"),
            op("Div", [p + "lo", p + "raw_nz"], p + "lo_steps"),
            op("Neg", [p + "lo_steps"], p + "zf"),
            op("Round", [p + "zf"], p + "zr"),
            op("Clip", [p + "zr", "rq_zero", "rq_qmax"], p + "zc"),
            op("Cast", [p + "zc"], y_zero, to=TensorProto.UINT8),
            op("Max", [p + "raw", "rq_small"], y_scale),
            op("QuantizeLinear", [x, y_scale, y_zero], p + "q"),
            op("Clip", [p + "q", "rq_qmin_u8", "rq_qmax_u8"], y),
        ]
    del graph.node[:]
    graph.node.extend(nodes)


def export_dynamic(quantized: nn.Module, fp32: Path, dst: Path) -> None:
    """Write to `dst` the ONNX dynamic int8 graph computing what torch's `quantized` model
    computes, from the same model's fp32 export `fp32`."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    layers = _unpack(dynamic_layers(quantized))
    if not layers:
        raise ConfigError("runtime=onnxruntime: torch's dynamic int8 model has no torch.ao "
                          "dynamic Linear layer to carry into ONNX")
    qmax = _activation_qmax(layers)
    from compression.runtime.ort_quant import gemm_to_matmul

    # ORT's dynamic quantizer makes MatMulInteger of MatMul only (a Gemm would stay float)
    fp = gemm_to_matmul(onnx.load(str(fp32)))
    excluded = _excluded(fp, layers)
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "fp32_matmul.onnx", Path(tmp) / "ort_dynamic.onnx"
        onnx.save(fp, str(src))
        with quiet():
            quantize_dynamic(str(src), str(out), weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul"], nodes_to_exclude=excluded)
        model = onnx.load(str(out))
    _carry_weights(model, layers, qmax)
    _torch_range(model, qmax)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
