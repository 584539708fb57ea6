"""ONNX clean-up of the QDQ graph torch.onnx writes for `twin.float_twin` (step 3 there):
the weight QuantizeLinears folded into int8 initializers and each Conv / Gemm bias into int32
(scale = input scale x weight scale, as ORT's own quantizer writes it), the form ORT's graph
optimizer fuses into QLinearConv / QGemm int8 kernels. It works on the ONNX protobuf
alone (numpy + onnx, no torch), so it sits apart from the torch-side twin."""

from __future__ import annotations

import numpy as np

from compression.core.errors import ConfigError


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
