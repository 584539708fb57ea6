"""Low-bit execution, measured: how a weight-only quantized Linear layer is best run on this CPU.

    python benchmarks/quantization.py --lowbit-kernels [--threads 1]

Candidates for y = x W^T (W: N x K), each timed on the same weights side by side:
- `fp32`: F.linear on the fp32 weight (the reference);
- `unpack`: today's `lowbit` layer (LowBitLinear): unpack the packed codes and dequantize to
  fp32 on every call, then F.linear;
- `int8pack`: torch's weight-only int8 CPU kernel `aten._weight_int8pack_mm` (8-bit codes, one
  scale per output channel);
- `int4pack`: torch's `aten._weight_int4pack_mm_for_cpu` (4-bit codes, fp scales and zeros per
  group of 32; wants N divisible by 16 and K by the group);
(onnxruntime's MatMulNBits is not compared here yet.)
The fastest per shape and batch is printed as the pick (as engine=auto picks by timing).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from compression.quantization.lowbit_modules import LowBitLinear, lowbit_from

SHAPES = [(1024, 1024), (300, 784), (112, 304)]  # a square layer; mlp's fc1; a /16 one
GROUP = 32


def _int8pack(w: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    scales = w.abs().amax(1).clamp(min=1e-12) / 127
    q = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
    return lambda x: torch.ops.aten._weight_int8pack_mm(x, q, scales)


def _int4pack(w: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor] | None:
    n, k = w.shape
    if n % 16 or k % GROUP:
        return None
    wg = w.view(n, k // GROUP, GROUP)
    scale = wg.abs().amax(-1).clamp(min=1e-12) / 7  # symmetric, as lowbit's 4-bit codes
    q = (torch.round(wg / scale[..., None]).clamp(-7, 7) + 8).to(torch.int32).view(n, k)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
    # w = (q - 8) * scale + zero, zero = 0 (symmetric); layout [K / group, N, 2]
    sz = torch.stack([scale, torch.zeros_like(scale)], -1).transpose(0, 1).contiguous()
    return lambda x: torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, GROUP, sz)


def candidates(w: torch.Tensor) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    layer4: LowBitLinear = lowbit_from(torch.nn.Linear(w.shape[1], w.shape[0], bias=False),
                                       4, GROUP)  # type: ignore[assignment]
    layer4.load_float(w, None)
    out: dict[str, Callable | None] = {
        "fp32": lambda x: F.linear(x, w), "unpack 4-bit": layer4,
        "int8pack": _int8pack(w), "int4pack": _int4pack(w),
    }
    return {k: f for k, f in out.items() if f is not None}


def time_side_by_side(fns: dict[str, Callable], x: torch.Tensor, repeats: int
                      ) -> dict[str, float]:
    """Median microseconds per call; candidates interleaved so drift hits them alike."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    with torch.inference_mode():
        for f in fns.values():
            for _ in range(3):
                f(x)
        for _ in range(repeats):
            for k, f in fns.items():
                t0 = time.perf_counter()
                f(x)
                times[k].append(time.perf_counter() - t0)
    return {k: 1e6 * statistics.median(v) for k, v in times.items()}


def run(threads: int, repeats: int = 50) -> None:
    torch.set_num_threads(threads)
    print(f"\nlow-bit execution ({threads} thread(s)): median us per call, ratio to fp32")
    for n, k in SHAPES:
        w = torch.randn(n, k, generator=torch.Generator().manual_seed(0)) / k ** 0.5
        fns = candidates(w)
        missing = sorted({"int4pack"} - set(fns))
        for batch in (1, 256):
            x = torch.randn(batch, k)
            us = time_side_by_side(fns, x, repeats if batch == 1 else max(10, repeats // 5))
            cells = "  ".join(f"{name} {t:9.1f} ({t / us['fp32']:.2f}x)"
                              for name, t in us.items())
            low = {name: t for name, t in us.items() if name != "fp32"}
            pick = min(low, key=low.get)
            print(f"  {n}x{k} batch {batch:>3}: {cells}  -> fastest low-bit: {pick}"
                  + (f"  (n/a: {', '.join(missing)})" if missing and batch == 1 else ""))
