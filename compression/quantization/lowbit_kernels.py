"""How a `lowbit` layer runs (`quantization.kernel`): the same packed weights, four ways.

- `unpack`: unpack the codes and dequantize to fp32 on every call, then the fp32 op. Holds only
  the packed bytes; pays the unpacking on every call (slowest at batch 1).
- `cached`: dequantize once (at the first call) and keep the fp32 weight: fp32 speed, fp32
  memory (the packed codes are kept too). Bit-identical to `unpack`.
- `int8pack`: torch's weight-only int8 CPU kernel `aten._weight_int8pack_mm` on the int8 codes
  and one scale per output row. Linear only, one scale group per row (granularity=channel,
  or a group_size >= the row).
- `int4pack`: torch's `aten._weight_int4pack_mm_for_cpu` on the codes packed 4 bits to a nibble
  with a scale per 32 inputs. Linear only, codes of <= 4 bits (or ternary), out features
  divisible by 16, in features and the group size divisible by 32.

Every kernel computes x W^T + b for the same dequantized W; the integer kernels sum in another
order, so outputs agree within fp32 rounding (tests/quantization/test_lowbit_kernels.py).
`auto` times the kernels each layer can run on that layer's own inputs (batch 1 and a training
batch; `pick_kernels`) and keeps the fastest per layer.

A layer only reads from its module the attributes every LowBitLayer has: `codes()` (int8 of the
weight's shape), `weight()` (dequantized fp32), `scales` (fp16, (out, groups)), `g` (values
per group), `code_bits`, `shape`, `bias`, and whether it is a Linear (`is_linear`).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any, Protocol

from compression.core.lazy import F, nn, torch
from compression.core.registry import Registry
from compression.quantization.timing import time_candidates

AUTO = "auto"
DEFAULT = "unpack"  # what `auto` means where nothing was timed (no data: a skeleton, a test)
INT4_GROUP = 32  # the int4pack kernel's scale group (its smallest; 64/128/256 would also do)

State = dict[str, "torch.Tensor"]


class Kernel(Protocol):
    def eligible(self, layer: Any) -> bool:
        """Whether this kernel can run `layer` (shape, bit width, layer kind)."""
        ...

    def prepare(self, layer: Any) -> State:
        """The tensors the kernel keeps resident beside the layer's packed state."""
        ...

    def weight(self, layer: Any, state: State) -> torch.Tensor | None:
        """The fp32 weight for the layer's own op, or None if `linear` does the work."""
        ...

    def linear(self, layer: Any, state: State, x: torch.Tensor) -> torch.Tensor:
        ...


class _WeightKernel:
    """Kernels that hand an fp32 weight to the layer's fp32 op (Linear and Conv2d)."""

    def eligible(self, layer: Any) -> bool:
        return True

    def linear(self, layer: Any, state: State, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight(layer, state), layer.bias)


class Unpack(_WeightKernel):
    def prepare(self, layer: Any) -> State:
        return {}

    def weight(self, layer: Any, state: State) -> torch.Tensor:
        return layer.weight()


class Cached(_WeightKernel):
    def prepare(self, layer: Any) -> State:
        return {"weight": layer.weight()}

    def weight(self, layer: Any, state: State) -> torch.Tensor:
        return state["weight"]


def _rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Size]:
    """(..., K) -> (M, K) contiguous fp32, and the leading shape to restore."""
    return x.reshape(-1, x.shape[-1]).contiguous(), x.shape[:-1]


class Int8Pack:
    def eligible(self, layer: Any) -> bool:
        return layer.is_linear and layer.scales.shape[1] == 1

    def prepare(self, layer: Any) -> State:
        return {"q": layer.codes().reshape(layer.shape[0], -1).contiguous(),
                "scales": layer.scales.float().reshape(-1).contiguous()}

    def weight(self, layer: Any, state: State) -> None:
        return None

    def linear(self, layer: Any, state: State, x: torch.Tensor) -> torch.Tensor:
        rows, lead = _rows(x)
        y = torch.ops.aten._weight_int8pack_mm(rows, state["q"], state["scales"])
        y = y.reshape(*lead, -1)
        return y if layer.bias is None else y + layer.bias


class Int4Pack:
    def eligible(self, layer: Any) -> bool:
        n, k = layer.shape[0], layer.shape.numel() // layer.shape[0]
        return (layer.is_linear and layer.code_bits <= 4 and n % 16 == 0
                and k % INT4_GROUP == 0 and layer.g % INT4_GROUP == 0)

    def prepare(self, layer: Any) -> State:
        n, k = layer.shape[0], layer.shape.numel() // layer.shape[0]
        # The kernel's codes are unsigned nibbles u with w = (u - 8) * scale + zero: our
        # symmetric codes q in [-7, 7] are u = q + 8 with zero 0. Each 32-input group of the
        # kernel lies inside one of our groups (g % 32 == 0), whose scale it repeats.
        u = (layer.codes().reshape(n, k).to(torch.int32) + 8).contiguous()
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(u, 1)
        scale = layer.scales.float().repeat_interleave(layer.g // INT4_GROUP, 1)
        scale = scale[:, : k // INT4_GROUP]
        sz = torch.stack([scale, torch.zeros_like(scale)], -1).transpose(0, 1).contiguous()
        return {"packed": packed, "scales_zeros": sz}

    def weight(self, layer: Any, state: State) -> None:
        return None

    def linear(self, layer: Any, state: State, x: torch.Tensor) -> torch.Tensor:
        rows, lead = _rows(x)
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(rows, state["packed"], INT4_GROUP,
                                                      state["scales_zeros"])
        y = y.reshape(*lead, -1)
        return y if layer.bias is None else y + layer.bias


KERNELS: Registry[Kernel] = Registry("quantization.kernel")
KERNELS.add("unpack", Unpack())
KERNELS.add("cached", Cached())
KERNELS.add("int8pack", Int8Pack())
KERNELS.add("int4pack", Int4Pack())


def eligible(layer: Any) -> list[str]:
    """The kernels `layer` can run, `unpack` first (it always can), then by name."""
    names = [name for name, k in KERNELS.items() if k.eligible(layer)]
    return sorted(names, key=lambda n: n != DEFAULT)


def resolve(layer: Any, kernel: str) -> str:
    """The kernel a layer runs when `kernel` is asked for: itself where the layer can run it,
    else `unpack` (e.g. int4pack on a 10-output classifier, int8pack on a conv)."""
    if kernel == AUTO:
        return DEFAULT
    return kernel if KERNELS[kernel].eligible(layer) else DEFAULT


def layer_inputs(model: nn.Module, layers: dict[str, nn.Module], batches: list[torch.Tensor]
                 ) -> dict[str, list[torch.Tensor]]:
    """What each layer receives when `model` runs each batch (forward pre-hooks)."""
    seen: dict[str, list[torch.Tensor]] = {name: [] for name in layers}

    def hook(name: str) -> Callable[[nn.Module, tuple[Any, ...]], None]:
        return lambda _m, args: seen[name].append(args[0].detach().clone())

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in layers.items()]
    try:
        with torch.inference_mode():
            for x in batches:
                model(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def pick_kernels(model: nn.Module, layers: dict[str, nn.Module], batches: list[torch.Tensor],
                 budget_s: float = 2.0) -> tuple[dict[str, str], dict[str, dict[str, float]]]:
    """`kernel=auto`: per layer, every kernel it can run, timed on the layer's own inputs for
    `batches` (calls interleaved; score = geometric mean over batches of the median ms), the
    fastest kept. Timed on one torch thread (measure.threads' default) by the thread's CPU
    time: on a loaded machine wall time let preemption decide (a pick of int8pack, 40x slower
    than fp32 at batch 256, was seen at a load average of 30 on 2 cores). Returns
    ({layer: kernel}, {layer: {kernel: score}}); a layer that can run only `unpack` is not
    timed."""
    inputs = layer_inputs(model, layers, batches)
    picks: dict[str, str] = {}
    scores: dict[str, dict[str, float]] = {}
    for name, layer in layers.items():
        names = eligible(layer)
        if len(names) == 1 or not inputs[name]:
            picks[name] = DEFAULT
            continue
        variants = {}
        for k in names:
            v = copy.deepcopy(layer)
            v.set_kernel(k)
            variants[k] = v
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            scores[name] = time_candidates(variants, inputs[name], budget_s / len(layers),
                                           time.thread_time_ns)
        finally:
            torch.set_num_threads(before)
        picks[name] = min(scores[name], key=scores[name].__getitem__)
    return picks, scores
