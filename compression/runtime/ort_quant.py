"""The run's quantization, done the ONNX Runtime way on the exported fp32 graph (torch.ao's
quantized modules do not export to ONNX). One entry per form of quantized model (the form a
mode declares, quantization/base.py), so a mode is converted by what it computes with, not by
its name; a mode whose form has no entry is refused before training.

- float32 (mode none, or a plug-in that only changes values): the fp32 graph as is;
- float16 (fp16): weights and activations fp16 (onnxconverter-common), fp32 inputs and outputs;
- int8_dynamic (dynamic_int8): torch's own dynamic int8 model carried into ONNX (dynamic_twin):
  its int8 weights and scales on MatMulInteger, activations quantized per batch to the range its
  kernels use (7 bits on x86); torch's dynamic mode is Linear-only, and so is this;
- int8_static (static_int8, qat_int8): torch's own int8 model written as QDQ (qdq/twin.py): the
  same int8 weights and the activation scales torch calibrated (static) or learned (QAT), so
  ORT runs the model the eager figures measured instead of re-calibrating (ORT's re-calibration
  scored up to 0.84 pt below and 1.1 pt above torch's int8);
- weight_only at 4 bits (lowbit): ORT's MatMulNBits kernel (Linear layers, block-wise scales).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from compression.core.errors import ConfigError
from compression.core.lazy import nn, torch
from compression.core.registry import Registry
from compression.quantization import QuantizationConfig
from compression.quantization.base import (
    FLOAT16,
    FLOAT32,
    INT8_DYNAMIC,
    INT8_STATIC,
    WEIGHT_ONLY,
    form_of,
    modes_of_form,
)
from compression.runtime.onnx_export import quiet


@dataclass(frozen=True)
class Source:
    """What a mode's ORT form is built from."""

    fp32: Path  # the final fp32 model (pruned, at its smaller shapes) exported to ONNX
    quantized: nn.Module | None  # torch's quantized model of the run (what eager measured)
    example: torch.Tensor  # one input (batch 1)
    opset: int
    ort_dynamic: bool = False  # int8_dynamic: ORT's own quantize_dynamic (runtime.dynamic_int8=ort)


@dataclass(frozen=True)
class OrtQuant:
    # Refuse, before training, what ORT cannot do for this mode and model (None: fine).
    check: Callable[[nn.Module, QuantizationConfig], str | None]
    # (source, output .onnx, config) -> writes the output
    convert: Callable[[Source, Path, QuantizationConfig], None]
    # Before training: build this mode's file from the untrained model (example input, temp
    # folder), so what cannot be built fails then, not after training (None: nothing to try).
    rehearse: Callable[[nn.Module, QuantizationConfig, torch.Tensor, Path], None] | None = None


ORT_QUANT: Registry[OrtQuant] = Registry("quantization form (in runtime=onnxruntime)")
register = ORT_QUANT.register


def _fine(model: nn.Module, cfg: QuantizationConfig) -> str | None:
    return None


def _copy(src: Source, dst: Path, cfg: QuantizationConfig) -> None:
    shutil.copyfile(src.fp32, dst)


register(FLOAT32)(OrtQuant(_fine, _copy))


def _fp16(src: Source, dst: Path, cfg: QuantizationConfig) -> None:
    import onnx
    from onnxconverter_common import float16

    model = float16.convert_float_to_float16(onnx.load(str(src.fp32)), keep_io_types=True)
    onnx.save(model, str(dst))


register(FLOAT16)(OrtQuant(_fine, _fp16))


def _dynamic(src: Source, dst: Path, cfg: QuantizationConfig) -> None:
    """torch's own dynamic int8 model carried into ONNX (dynamic_twin): its int8 weights and
    scales, its 7-bit activation range where its kernels use one. ORT's own quantize_dynamic
    (8-bit activations, its own weight scales) had scored 0.84 pt above torch's int8 on
    lenet5-structured. ORT's own is used with runtime.dynamic_int8=ort, and without a torch.ao
    model (backend torchao)."""
    from compression.runtime.dynamic_twin import dynamic_layers, export_dynamic

    if not src.ort_dynamic and src.quantized is not None and dynamic_layers(src.quantized):
        export_dynamic(src.quantized, src.fp32, dst)
        return
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # per-channel weights: per-tensor lost 2 of 359 digits test samples that torch's dynamic
    # mode (and ORT per-channel) kept, on structured-50% mlp
    with quiet():
        quantize_dynamic(str(src.fp32), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul", "Gemm"])


def _check_dynamic(model: nn.Module, cfg: QuantizationConfig) -> str | None:
    layers = getattr(cfg, "layers", ["linear"])
    if set(layers) - {"linear"}:
        return (f"quantization.layers={layers}: ORT's dynamic int8 here covers Linear "
                "(MatMul/Gemm) only; use quantization.layers=[linear]")
    return None


register(INT8_DYNAMIC)(OrtQuant(_check_dynamic, _dynamic))

def _static(src: Source, dst: Path, cfg: QuantizationConfig) -> None:
    """torch's own int8 model written as QDQ (qdq/twin.py): its per-channel int8 weights, its
    calibrated (static) or learned (QAT) activation scales and zero points, reduce_range
    included; ORT re-calibrates nothing, so ORT runs the model torch measured."""
    if src.quantized is None:
        raise ConfigError(f"runtime=onnxruntime with quantization.mode={cfg.mode}: torch's "
                          "int8 model is needed to carry its scales into ONNX")
    from compression.runtime.qdq.twin import export_qdq

    export_qdq(src.quantized, src.example, dst, src.opset)


def _rehearse_static(model: nn.Module, cfg: QuantizationConfig, example: torch.Tensor,
                     tmp: Path) -> None:
    """torch's int8 structure for this model (its artifact skeleton: prepared, converted) carried
    into QDQ, so an op with no QDQ form is named before training."""
    import copy

    from compression.quantization import QUANTIZERS
    from compression.runtime.qdq.twin import export_qdq

    skeleton = QUANTIZERS.get(cfg.mode).handler.skeleton(copy.deepcopy(model), cfg, example)
    export_qdq(skeleton, example, tmp / "check_qdq.onnx", 18)


register(INT8_STATIC)(OrtQuant(_fine, _static, _rehearse_static))


def _check_lowbit(model: nn.Module, cfg: QuantizationConfig) -> str | None:
    bits, group = getattr(cfg, "bits", 4), getattr(cfg, "group_size", 32)
    if bits != 4:
        return (f"quantization.bits={bits}: ORT's weight-only MatMulNBits kernel runs 4-bit "
                "weights only; use quantization.bits=4")
    if getattr(cfg, "granularity", "group") != "group" or group < 16 or group & (group - 1):
        return (f"quantization.granularity={cfg.granularity} group_size={group}: MatMulNBits "  # type: ignore[attr-defined]
                "takes block-wise scales over a power-of-two block of at least 16; use "
                "quantization.granularity=group quantization.group_size=32 (16, 64, 128, ...)")
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv1d | nn.Conv2d)]
    if convs and "conv" in getattr(cfg, "layers", []):
        return (f"layer {convs[0]!r} is a convolution: MatMulNBits covers Linear layers only; "
                "use quantization.layers=[linear] (convolutions stay fp32)")
    return None


def _lowbit(src: Source, dst: Path, cfg: QuantizationConfig) -> None:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = gemm_to_matmul(onnx.load(str(src.fp32)))
    quantizer = MatMulNBitsQuantizer(model, block_size=cfg.group_size,  # type: ignore[attr-defined]
                                     is_symmetric=True, bits=4)
    quantizer.process()
    quantizer.model.save_model_to_file(str(dst))


register(WEIGHT_ONLY)(OrtQuant(_check_lowbit, _lowbit))


def gemm_to_matmul(model: object) -> object:
    """Rewrite each Gemm with a constant weight (A @ B^T + C, what a Linear exports to) as MatMul
    + Add with the weight stored transposed: ORT's 4-bit quantizer only rewrites MatMul."""
    import onnx
    from onnx import numpy_helper

    graph = model.graph  # type: ignore[attr-defined]
    inits = {t.name: t for t in graph.initializer}
    nodes = []
    for node in graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        plain = (attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0
                 and not attrs.get("transA", 0))
        if node.op_type != "Gemm" or not plain or node.input[1] not in inits:
            nodes.append(node)
            continue
        w = numpy_helper.to_array(inits[node.input[1]])
        w = w.T.copy() if attrs.get("transB", 0) else w  # MatMul wants (in, out)
        name = f"{node.input[1]}_matmul"
        graph.initializer.append(numpy_helper.from_array(w, name))
        has_bias = len(node.input) > 2 and bool(node.input[2])
        mm_out = f"{node.output[0]}_mm" if has_bias else node.output[0]
        nodes.append(onnx.helper.make_node("MatMul", [node.input[0], name], [mm_out],
                                           name=f"{node.name}_matmul"))
        if has_bias:
            nodes.append(onnx.helper.make_node("Add", [mm_out, node.input[2]], [node.output[0]],
                                               name=f"{node.name}_add"))
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for n in graph.node for i in n.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    return model


def check(model: nn.Module, cfg: QuantizationConfig) -> None:
    """One line, before training, for a mode ORT has no form of, or a setting it cannot take."""
    entry = ORT_QUANT.find(form_of(cfg))
    if entry is None:
        raise ConfigError(f"runtime=onnxruntime cannot run quantization.mode={cfg.mode} (ONNX "
                          f"Runtime's CPU provider has no such kernels); allowed: "
                          f"{', '.join(modes_of_form(ORT_QUANT))}")
    why = entry.check(model, cfg)
    if why:
        raise ConfigError(f"runtime=onnxruntime with quantization.mode={cfg.mode}: {why}")


def conversion(cfg: QuantizationConfig) -> OrtQuant:
    """The ORT conversion of `cfg.mode`'s models (after `check`)."""
    return ORT_QUANT[form_of(cfg)]
