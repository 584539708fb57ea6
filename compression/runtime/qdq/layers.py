"""The float stand-ins `twin.float_twin` puts in place of torch.ao's quantized modules and
ops: each computes in float what the int8 module computes, so the twin exports as plain ONNX ops
wrapped in QuantizeLinear / DequantizeLinear. Kept apart from the graph rewrite because these
tables are what grows when torch.ao gains a quantized module the twin should carry."""

from __future__ import annotations

import operator
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from compression.core.errors import ConfigError
from compression.runtime.onnx_export import quiet

with quiet():
    import torch.ao.nn.intrinsic.quantized as nniq
    import torch.ao.nn.quantized as nnq

CONV = {nnq.Conv1d: F.conv1d, nnq.Conv2d: F.conv2d, nnq.Conv3d: F.conv3d,
        nniq.ConvReLU1d: F.conv1d, nniq.ConvReLU2d: F.conv2d, nniq.ConvReLU3d: F.conv3d}
LINEAR = (nnq.Linear, nniq.LinearReLU)
RELU = (nniq.ConvReLU1d, nniq.ConvReLU2d, nniq.ConvReLU3d, nniq.LinearReLU)
# torch.ops.quantized.<op>(a, b, scale, zero_point) -> its float op (the output's qparams are
# applied after it, as for every quantized value)
QUANTIZED_OPS: dict[str, Callable[..., torch.Tensor]] = {
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
FLOAT: dict[type, Callable[[nn.Module], nn.Module]] = {
    nnq.LayerNorm: _layer_norm,
    nnq.Hardswish: lambda m: nn.Hardswish(),
    nnq.ReLU6: lambda m: nn.ReLU6(),
    nnq.Sigmoid: lambda m: nn.Sigmoid(),
    nnq.LeakyReLU: lambda m: nn.LeakyReLU(m.negative_slope),
    nnq.ELU: lambda m: nn.ELU(m.alpha),
    nnq.Softmax: lambda m: nn.Softmax(m.dim),
    nnq.Dropout: lambda m: nn.Identity(),
}


class Weighted(nn.Module):
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
        self.relu = isinstance(m, RELU)
        self.conv = CONV.get(type(m))
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
