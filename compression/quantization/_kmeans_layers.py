"""kmeans's layers: codes + fp16 codebook in place of a Linear / Conv2d weight. Apart from
compression/quantization/kmeans.py because they derive from nn.Module, which needs torch when
the class is made; kmeans.py imports this module when it quantizes or loads a model."""

from __future__ import annotations

from typing import TYPE_CHECKING

from compression.core.lazy import F, nn, no_grad, torch
from compression.measure import stands_in_for_prunable
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
        """The fp32 weight. Rebuilt on every call while the codebook is being fine-tuned (the
        gradient flows through it); otherwise kept between calls until the codes or codebook
        change (rebuilding per call ran lenet5 at 0.5-0.6x the dense speed). The kept tensor
        is counted in `memory_bytes`, so `model_bytes` shows what the speed costs."""
        if self.tuned is not None:
            return self._rebuild(self.tuned)
        try:  # in-place writes (load_float, load_state_dict, end_tuning) bump _version
            key = (self.codes._version, self.codebook._version, self.codes.data_ptr(),
                   self.codebook.data_ptr())
        except RuntimeError:  # inference tensors keep no version: no way to know, no cache
            return self._rebuild(self.codebook.float())
        cached = self.__dict__.get("_kept")
        if cached is None or cached[0] != key:
            with torch.inference_mode(False), torch.no_grad():  # a plain tensor, usable anywhere
                cached = (key, self._rebuild(self.codebook.float()))
            self.__dict__["_kept"] = cached
        return cached[1]

    def _rebuild(self, book: torch.Tensor) -> torch.Tensor:
        return torch.cat([book.new_zeros(1), book])[self.codes.long()]

    def memory_bytes(self) -> int:
        """Resident bytes: codes, codebook, bias, and the kept fp32 weight once built."""
        held = [*self.buffers(), *self.parameters()]
        if self.__dict__.get("_kept") is not None:
            held.append(self.__dict__["_kept"][1])
        return sum(t.numel() * t.element_size() for t in held)

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


