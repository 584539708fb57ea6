"""Low-bit execution, measured: how a weight-only quantized Linear layer is best run on this CPU.

    python benchmarks/quantization.py --lowbit-kernels [--threads 1]

Candidates for y = x W^T (W: N x K, 4-bit codes), each timed on the same weights side by side,
calls interleaved, at batch 1 and 256:
- `fp32`: F.linear on the fp32 weight (the reference);
- the library's `lowbit` layer (LowBitLinear, `quantization.kernel`) running each kernel it can:
  `unpack` (unpack + dequantize to fp32 on every call), `cached` (the dequantized fp32 weight
  kept: fp32 memory), `int4pack` (torch's `aten._weight_int4pack_mm_for_cpu`, 4-bit codes with
  group-32 scales; N divisible by 16, K by 32) on 4-bit group-32 codes, and `int8pack` (torch's
  `aten._weight_int8pack_mm`, int8 codes with one scale per output row) on 4-bit per-channel
  codes;
- onnxruntime's 4-bit weight-only `MatMulNBits` (one MatMul node quantized by
  `MatMulNBitsQuantizer`, symmetric, blocks of 32 along K), with fp32 compute
  (accuracy_level 0) and int8 compute of the activations (accuracy_level 4), one session
  thread per torch thread.
`max err` is the largest |y - y_unpack| relative to max |y_unpack| at batch 256, y_unpack from
the same codes (fp32's error is the 4-bit quantization error; ORT quantizes the dequantized g32
weight again itself, its own way, so its codes differ). `auto picks` is what
`quantization.kernel=auto` picks for the layer when timed as the library does (its own short
budget; the table's numbers are the longer side-by-side measurement). The library picks among
its kernels only; ORT is the runtime=onnxruntime path (compression/runtime/ort_quant.py).
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from compression.quantization import lowbit_kernels
from compression.quantization.lowbit_modules import LowBitLinear, lowbit_from

SHAPES = [(1024, 1024), (304, 784), (112, 304), (120, 400)]  # square; ~mlp fc1; /16; lenet5 fc1
GROUP = 32
BATCHES = (1, 256)


def _layer(w: torch.Tensor, group: int | None, kernel: str) -> LowBitLinear:
    layer = lowbit_from(torch.nn.Linear(w.shape[1], w.shape[0], bias=False), 4, group)
    layer.load_float(w, None)
    layer.set_kernel(kernel)
    return layer  # type: ignore[return-value]


def _ort(w: torch.Tensor, threads: int, accuracy_level: int
         ) -> Callable[[torch.Tensor], object] | None:
    """One MatMul (X @ W^T) quantized to MatMulNBits, run by an ORT session; None if it fails."""
    try:
        import numpy as np
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    except ImportError:
        return None
    n, k = w.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["Y"])], "linear",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", k])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", n])],
        [numpy_helper.from_array(np.ascontiguousarray(w.T.numpy()), "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 10)
    onnx.checker.check_model(model)
    q = MatMulNBitsQuantizer(model, bits=4, block_size=GROUP, is_symmetric=True,
                             accuracy_level=accuracy_level)
    q.process()
    if not any(node.op_type == "MatMulNBits" for node in q.model.model.graph.node):
        return None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(q.model.model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(sess.run(None, {"X": x.numpy()})[0])


def candidates(w: torch.Tensor, threads: int) -> tuple[dict[str, Callable], dict[str, str]]:
    """(name -> callable, layer description -> what kernel=auto picks for it)."""
    g32 = _layer(w, GROUP, "unpack")
    ch = _layer(w, None, "unpack")
    fns: dict[str, Callable | None] = {"fp32": lambda x: F.linear(x, w)}
    for kernel in lowbit_kernels.eligible(g32):
        fns[f"{kernel} (g32)"] = _layer(w, GROUP, kernel)
    fns["int8pack (ch)"] = _layer(w, None, "int8pack")
    fns["ort nbits acc0"] = _ort(g32.weight(), threads, 0)
    fns["ort nbits acc4"] = _ort(g32.weight(), threads, 4)
    picks = {}
    for label, layer in (("4-bit g32", g32), ("4-bit channel", ch)):
        batches = [torch.randn(b, w.shape[1]) for b in BATCHES]
        model = torch.nn.Sequential(copy.deepcopy(layer))
        chose, _ = lowbit_kernels.pick_kernels(model, {"0": model[0]}, batches)
        picks[label] = chose["0"]
    return {k: f for k, f in fns.items() if f is not None}, picks


def time_side_by_side(fns: dict[str, Callable], x: torch.Tensor, repeats: int
                      ) -> dict[str, float]:
    """Median microseconds per call; candidates interleaved so drift hits them alike, and the
    order rotated every round, so none always runs right after the same neighbour (whose
    memory traffic leaves it cold caches)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    items = list(fns.items())
    with torch.inference_mode():
        for f in fns.values():
            for _ in range(3):
                f(x)
        for r in range(repeats):
            for k, f in items[r % len(items):] + items[: r % len(items)]:
                t0 = time.perf_counter()
                f(x)
                times[k].append(time.perf_counter() - t0)
    return {k: 1e6 * statistics.median(v) for k, v in times.items()}


def max_errors(fns: dict[str, Callable], w: torch.Tensor, x: torch.Tensor) -> dict[str, float]:
    """Each candidate against `unpack` of the same codes (ORT's and fp32's: the g32 codes)."""
    refs = {"(g32)": fns["unpack (g32)"], "(ch)": _layer(w, None, "unpack")}
    with torch.inference_mode():
        out = {}
        for k, f in fns.items():
            ref = refs["(ch)" if k.endswith("(ch)") else "(g32)"](x)
            out[k] = float((f(x) - ref).abs().max()) / float(ref.abs().max())
        return out


def run(threads: int, repeats: int = 50) -> None:
    import logging

    import onnxruntime

    logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)
    torch.set_num_threads(threads)
    print(f"\nlow-bit execution ({threads} thread(s), onnxruntime {onnxruntime.__version__}): "
          "median us per call, ratio to fp32")
    for n, k in SHAPES:
        w = torch.randn(n, k, generator=torch.Generator().manual_seed(0)) / k ** 0.5
        fns, picks = candidates(w, threads)
        errors = max_errors(fns, w, torch.randn(256, k))
        print(f"  {n}x{k}: auto picks {', '.join(f'{d}: {p}' for d, p in picks.items())}; "
              "max err " + ", ".join(f"{name} {e:.1e}" for name, e in errors.items()
                                     if name != "unpack (g32)"))
        for batch in BATCHES:
            x = torch.randn(batch, k)
            us = time_side_by_side(fns, x, repeats if batch == 1 else max(10, repeats // 5))
            cells = "  ".join(f"{name} {t:8.1f} ({t / us['fp32']:.2f}x)"
                              for name, t in us.items())
            low = {name: t for name, t in us.items() if name != "fp32"}
            print(f"    batch {batch:>3}: {cells}  -> fastest low-bit: {min(low, key=low.get)}")
