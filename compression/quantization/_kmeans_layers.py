"""kmeans's layers: codes + fp16 codebook in place of a Linear / Conv2d weight. Apart from
compression/quantization/kmeans.py because they derive from nn.Module, which needs torch when
the class is made; kmeans.py imports this module when it quantizes or loads a model."""

from __future__ import annotations

from typing import TYPE_CHECKING

from compression.lazy import F, nn, no_grad, torch
from compression.metrics import stands_in_for_prunable
from compression.quantization.kmeans import assign, kmeans_1d

if TYPE_CHECKING:
    from compression.quantization.kmeans import KMeansConfig


@stands_in_for_prunable
class SharedWeightLayer(nn.Module):
    """Codes (0 = pruned, i = codebook[i - 1]) + fp16 codebook + fp32 bias."""

    def __init__(self, shape: torch.Size, bits: int, bias: bool) -> None:
        super().__init__()
        self.shape, self.bits = torch.Size(shape), bits
        dtype = torch.uint8 if bits < 8 else torch.int16
        self.register_buffer("codes", torch.zeros(self.shape, dtype=dtype))
        self.register_buffer("codebook", torch.zeros(1 << bits, dtype=torch.float16))
        self.register_parameter("tuned", None)  # fp32 codebook while fine-tuning
        self.bias = nn.Parameter(torch.zeros(self.shape[0]), requires_grad=False) if bias else None

    @no_grad
    def load_float(self, weight: torch.Tensor, bias: torch.Tensor | None, cfg: KMeansConfig
                   ) -> torch.Tensor:
        """Cluster `weight`'s nonzeros; returns the shared-weight fp32 tensor (for the error)."""
        w = weight.detach().float()
        nz = w != 0
        c = kmeans_1d(w[nz], 1 << self.bits, cfg.init, cfg.iterations).half()
        self.codebook.copy_(c)
        codes = torch.zeros(self.shape, dtype=torch.int64)
        codes[nz] = assign(w[nz], c.float()) + 1  # nearest of the stored (fp16) values
        self.codes.copy_(codes)
        if self.bias is not None and bias is not None:
            self.bias.copy_(bias.detach())
        return self.weight()

    def weight(self) -> torch.Tensor:
        book = self.tuned if self.tuned is not None else self.codebook.float()
        return torch.cat([book.new_zeros(1), book])[self.codes.long()]

    def start_tuning(self) -> None:
        self.tuned = nn.Parameter(self.codebook.float())
        if self.bias is not None:
            self.bias.requires_grad_(True)

    @no_grad
    def end_tuning(self) -> None:
        assert self.tuned is not None
        self.codebook.copy_(self.tuned.half())
        self.tuned = None
        if self.bias is not None:
            self.bias.requires_grad_(False)

    def extra_repr(self) -> str:
        return f"shape={tuple(self.shape)}, bits={self.bits}"


class SharedLinear(SharedWeightLayer):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight(), self.bias)


class SharedConv2d(SharedWeightLayer):
    def __init__(self, conv: nn.Conv2d, bits: int) -> None:
        super().__init__(conv.weight.shape, bits, conv.bias is not None)
        self.stride, self.padding = conv.stride, conv.padding
        self.dilation, self.groups = conv.dilation, conv.groups
        if conv.padding_mode != "zeros":
            raise ValueError("kmeans Conv2d supports padding_mode='zeros' only")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight(), self.bias, self.stride, self.padding, self.dilation,
                        self.groups)


def shared_from(layer: nn.Module, bits: int) -> SharedWeightLayer:
    if isinstance(layer, nn.Conv2d):
        return SharedConv2d(layer, bits)
    return SharedLinear(layer.weight.shape, bits, layer.bias is not None)


