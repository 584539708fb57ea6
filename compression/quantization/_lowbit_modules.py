"""Low-bit weight quantization (2..8 bits, or ternary) and the layers that run it.

A weight of shape (out, ...) is viewed as rows of K = numel / out values, cut into groups of
`group` values (a row is one group for per-channel scales; the last group is zero-padded).
Each group gets one symmetric scale, stored as fp16:

    int b bits:  scale = max|w| / (2^(b-1) - 1),  q in [-(2^(b-1) - 1), 2^(b-1) - 1]
    ternary:     scale = mean|w| (BitNet b1.58),  q in {-1, 0, +1}, stored in 2 bits

Symmetric on purpose: 0 maps to q = 0, which packs to zero bits, so pruned weights stay zero
and the bitmask encoding of the packed bytes keeps the sparsity saving.

How a layer runs is its `kernel` (see `lowbit_kernels`): `unpack` dequantizes the weight on every
call and runs the fp32 op (small in memory, slow at batch 1), `cached` keeps the dequantized fp32
weight, `int8pack` / `int4pack` call torch's weight-only CPU kernels on the codes. Whatever a
kernel keeps resident is counted by `memory_bytes` (the run's `model_bytes`); the artifact holds
only the packed codes and scales, whatever the kernel.
"""

from __future__ import annotations

from compression.core.lazy import F, nn, torch
from compression.measure import stands_in_for_prunable
from compression.quantization import affine, packing
from compression.quantization import lowbit_kernels as kernels


def group_len(shape: torch.Size, group_size: int | None) -> int:
    """Values per group: a whole row (per-channel) or `group_size`."""
    row = shape.numel() // shape[0]
    return row if group_size is None else min(group_size, row)


def _grouped(w: torch.Tensor, g: int) -> torch.Tensor:
    """(out, ...) -> (out, n_groups, g), zero-padding each row to whole groups."""
    rows = w.reshape(w.shape[0], -1)
    pad = -rows.shape[1] % g
    return F.pad(rows, (0, pad)).view(rows.shape[0], -1, g)


def quantize_weight(w: torch.Tensor, bits: int | str, g: int) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (q: int8 of w.shape, scales: fp16 of (out, n_groups))."""
    wg = _grouped(w.detach().float(), g)
    if bits == "ternary":
        # BitNet b1.58's absmean, over the nonzero weights: pruned zeros (and the zero padding
        # of the last group) would shrink the scale until every kept weight rounds to +-1 of a
        # tiny step (mlp/digits pruned 90%: 0.20 test accuracy instead of 0.92).
        count = (wg != 0).sum(-1, keepdim=True).clamp(min=1)
        q_max, scale = 1, wg.abs().sum(-1, keepdim=True) / count
    else:
        q_max = (1 << (int(bits) - 1)) - 1
        scale = wg.abs().amax(-1, keepdim=True) / q_max
    # Round the scale to its stored fp16 value first, so quantize and dequantize agree exactly;
    # an all-zero group gets scale 1 (any value works, its q are all 0).
    scale = scale.half()
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    zero = torch.zeros((), dtype=torch.int64)
    q = affine.quantize(wg, scale.float(), zero, -q_max, q_max)
    q = q.view(w.shape[0], -1)[:, : w[0].numel()].reshape(w.shape)
    return q.to(torch.int8), scale.squeeze(-1)


def dequantize_weight(q: torch.Tensor, scales: torch.Tensor, shape: torch.Size, g: int
                      ) -> torch.Tensor:
    qg = _grouped(q.view(shape).float(), g)  # (out, n_groups, g)
    return (qg * scales.float().unsqueeze(-1)).view(shape[0], -1)[:, : shape.numel() // shape[0]] \
        .reshape(shape)


def fake_quantize(w: torch.Tensor, bits: int | str, g: int) -> torch.Tensor:
    """Quantize-dequantize in the forward pass, identity gradient (straight-through estimator)."""
    q, scales = quantize_weight(w, bits, g)
    return w + (dequantize_weight(q, scales, w.shape, g) - w).detach()


def storage_bits(bits: int | str) -> int:
    return 2 if bits == "ternary" else int(bits)


def _drop_kernel_state(layer: LowBitLayer, _incompatible_keys: object) -> None:
    layer.drop_kernel_state()  # a module-level function, so the layer still pickles


@stands_in_for_prunable
class LowBitLayer(nn.Module):
    """Packed low-bit weight + fp16 group scales + fp32 bias; subclasses supply the op, the
    `kernel` how it is computed (state the kernel prepares is built at the first call, or by
    `memory_bytes`, and dropped whenever the packed state changes)."""

    is_linear = False

    def __init__(self, shape: torch.Size, bits: int | str, g: int, bias: bool,
                 kernel: str = kernels.DEFAULT) -> None:
        super().__init__()
        self.shape, self.bits, self.g = torch.Size(shape), bits, g
        n_groups = -(-(self.shape.numel() // self.shape[0]) // g)
        numel = packing.packed_numel(self.shape.numel(), storage_bits(bits))
        self.register_buffer("packed", torch.zeros(numel, dtype=torch.uint8))
        self.register_buffer("scales", torch.ones(self.shape[0], n_groups, dtype=torch.float16))
        self.bias = nn.Parameter(torch.zeros(self.shape[0]), requires_grad=False) if bias else None
        self.kernel_state: kernels.State | None = None  # not a buffer: never in the artifact
        self.set_kernel(kernel)
        self.register_load_state_dict_post_hook(_drop_kernel_state)  # new codes: re-prepare

    @property
    def code_bits(self) -> int:
        return storage_bits(self.bits)

    def set_kernel(self, kernel: str) -> None:
        if not kernels.KERNELS[kernel].eligible(self):
            raise ValueError(f"lowbit kernel {kernel!r} cannot run {self.extra_repr()} "
                             f"({type(self).__name__}); it can run {kernels.eligible(self)}")
        self.kernel = kernel
        self.drop_kernel_state()

    def drop_kernel_state(self) -> None:
        self.kernel_state = None

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        self.drop_kernel_state()  # .to() / .half(): prepared tensors are rebuilt from the new
        return super()._apply(fn, recurse)

    def prepared(self) -> kernels.State:
        if self.kernel_state is None:
            # Plain tensors even when first called under inference_mode (they may be used
            # outside it later).
            with torch.inference_mode(False), torch.no_grad():
                self.kernel_state = kernels.KERNELS[self.kernel].prepare(self)
        return self.kernel_state

    def memory_bytes(self) -> int:
        """Resident bytes: the packed state plus what the kernel keeps (e.g. `cached`: the fp32
        weight), so `model_bytes` tells the memory cost of a fast kernel."""
        held = [*self.buffers(), *self.parameters(), *self.prepared().values()]
        return sum(t.numel() * t.element_size() for t in held)

    def load_float(self, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """Quantize and pack `weight`; returns the dequantized weight (for the error)."""
        q, scales = quantize_weight(weight, self.bits, self.g)
        self.packed.copy_(packing.pack(q, storage_bits(self.bits)))
        self.scales.copy_(scales)
        if self.bias is not None and bias is not None:
            self.bias.data.copy_(bias.detach())
        self.drop_kernel_state()
        return self.weight()

    def codes(self) -> torch.Tensor:
        """The signed integer codes, int8 of the weight's shape."""
        return packing.unpack(self.packed, storage_bits(self.bits), self.shape.numel()) \
            .view(self.shape)

    def weight(self) -> torch.Tensor:
        """The dequantized fp32 weight, unpacked on each call."""
        return dequantize_weight(self.codes(), self.scales, self.shape, self.g)

    def run_weight(self) -> torch.Tensor:
        """The fp32 weight as the kernel supplies it (unpacked now, or cached)."""
        w = kernels.KERNELS[self.kernel].weight(self, self.prepared())
        assert w is not None, f"kernel {self.kernel} runs Linear layers only"
        return w

    def extra_repr(self) -> str:
        return f"shape={tuple(self.shape)}, bits={self.bits}, group={self.g}, kernel={self.kernel}"

    def stored_weight_bits(self) -> int:
        """Bits each weight takes in the packed buffer, read off the buffer's length (what is
        stored, not what the config says); metrics.weight_bits averages it over layers."""
        numel = self.shape.numel()
        bits = self.packed.numel() * 8 // numel
        if packing.packed_numel(numel, bits) != self.packed.numel():
            raise ValueError(f"{self.packed.numel()} packed bytes hold no whole bit width "
                             f"for {numel} weights")
        return bits


class LowBitLinear(LowBitLayer):
    is_linear = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return kernels.KERNELS[self.kernel].linear(self, self.prepared(), x)


class LowBitConv2d(LowBitLayer):
    def __init__(self, conv: nn.Conv2d, bits: int | str, g: int) -> None:
        super().__init__(conv.weight.shape, bits, g, conv.bias is not None)
        self.stride, self.padding = conv.stride, conv.padding
        self.dilation, self.groups = conv.dilation, conv.groups
        if conv.padding_mode != "zeros":
            raise ValueError("lowbit Conv2d supports padding_mode='zeros' only")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.run_weight(), self.bias, self.stride, self.padding, self.dilation,
                        self.groups)


def lowbit_from(layer: nn.Module, bits: int | str, group_size: int | None) -> LowBitLayer:
    """An empty low-bit layer shaped like `layer` (Linear or Conv2d)."""
    g = group_len(layer.weight.shape, group_size)
    if isinstance(layer, nn.Conv2d):
        return LowBitConv2d(layer, bits, g)
    return LowBitLinear(layer.weight.shape, bits, g, layer.bias is not None)


class FakeQuantLinear(nn.Linear):
    """nn.Linear whose forward sees its weight fake-quantized (QAT). Made by switching the class
    of an existing layer, so `.weight` stays the same Parameter (optimizer, pruning masks)."""

    bits: int | str
    g: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, fake_quantize(self.weight, self.bits, self.g), self.bias)


class FakeQuantConv2d(nn.Conv2d):
    bits: int | str
    g: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, fake_quantize(self.weight, self.bits, self.g), self.bias)


def make_fake_quant(layer: nn.Module, bits: int | str, group_size: int | None) -> None:
    """Turn a Linear/Conv2d into its fake-quantized twin in place."""
    layer.__class__ = FakeQuantConv2d if isinstance(layer, nn.Conv2d) else FakeQuantLinear
    layer.bits, layer.g = bits, group_len(layer.weight.shape, group_size)
