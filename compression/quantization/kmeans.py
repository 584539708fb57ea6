"""`kmeans`: weight sharing (Deep Compression, Han et al. 2016). Each layer's nonzero weights
are clustered by 1-D k-means into 2^bits shared values (the layer's codebook, stored as fp16);
each weight is stored as the index of its centroid. Pruned weights keep code 0, which means an
exact 0, so the masks stay applied and the artifact's position coding drops them.

Centroids start linearly spaced over [min, max] of the weights (Han's finding: linear init
keeps the rare large weights, which density-based init under-represents). With `epochs > 0`
the centroids (and biases) are fine-tuned: the gradient of a shared value is the sum of the
gradients of the weights that share it (torch's index backward does exactly that).

In memory a layer holds its codes (uint8; int16 for 8 bits, since code 0 is reserved) and
rebuilds the fp32 weight by a table lookup on each call; on disk the codes are packed to `bits`
bits per stored weight (and entropy coded with export.codec).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from compression.core import validation as v
from compression.core.errors import ConfigError
from compression.core.lazy import nn, nn_kinds, torch
from compression.quantization.base import (
    CODEBOOK,
    QUANTIZERS,
    SQNR,
    Passthrough,
    QuantizationConfig,
    Quantized,
    QuantSession,
    WeightErrors,
)

LAYER_KINDS: dict[str, str] = {"linear": "Linear", "conv": "Conv2d"}  # torch.nn class names
UNSUPPORTED_KINDS = ("Conv1d", "Conv3d", "ConvTranspose2d")  # torch.nn class names
INITS = ("linear", "density", "random")


@dataclass
class KMeansConfig(QuantizationConfig):
    mode: str = "kmeans"
    bits: int = 4  # 2^bits shared values per layer
    init: str = "linear"  # linear (Han 2016) | density (quantiles) | random (sampled weights)
    iterations: int = 30  # Lloyd iterations (stops earlier once the centroids are still)
    epochs: int = 0  # centroid fine-tuning epochs (0: none)
    lr: float = 1.0e-4  # centroid fine-tuning learning rate
    layers: list[str] = field(default_factory=lambda: ["linear", "conv"])

    def __post_init__(self) -> None:
        v.in_range("quantization.bits", self.bits, 2, 8, integer=True)
        v.one_of("quantization.init", self.init, list(INITS))
        v.in_range("quantization.iterations", self.iterations, 1, None, integer=True)
        v.in_range("quantization.epochs", self.epochs, 0, None, integer=True)
        v.in_range("quantization.lr", self.lr, 0, None, lo_open=True)
        for kind in v.string_list("quantization.layers", self.layers):
            v.one_of("quantization.layers", kind, sorted(LAYER_KINDS))

    def label(self) -> str:
        return f"{self.mode}/{self.bits}"


# ---------------------------------------------------------------------------- k-means
def _init(w: torch.Tensor, k: int, how: str, gen: torch.Generator) -> torch.Tensor:
    if how == "linear":
        return torch.linspace(float(w.min()), float(w.max()), k)
    if how == "density":
        return torch.quantile(w, torch.linspace(0, 1, k))
    return w[torch.randint(len(w), (k,), generator=gen)].sort().values


def assign(w: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of each value's nearest centroid (centroids sorted ascending)."""
    return torch.searchsorted((centroids[1:] + centroids[:-1]) / 2, w)


def kmeans_1d(w: torch.Tensor, k: int, how: str = "linear", iterations: int = 30,
              seed: int = 0) -> torch.Tensor:
    """`k` sorted centroids of the 1-D values `w` (Lloyd's algorithm, exact in 1-D by sorting)."""
    w = w.detach().float().flatten()
    if not w.numel():
        return torch.zeros(k)
    c = _init(w, k, how, torch.Generator().manual_seed(seed))
    for _ in range(iterations):
        idx = assign(w, c)
        counts = torch.bincount(idx, minlength=k)
        sums = torch.zeros(k).scatter_add_(0, idx, w)
        new = torch.where(counts > 0, sums / counts.clamp(min=1), c).sort().values
        if torch.equal(new, c):
            break
        c = new
    return c


def __getattr__(name: str) -> Any:  # SharedWeightLayer, SharedLinear, SharedConv2d: on use
    if name.startswith("Shared"):
        from compression.quantization import _kmeans_layers

        return getattr(_kmeans_layers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def shared_from(layer: nn.Module, bits: int) -> nn.Module:
    """A SharedLinear / SharedConv2d shell for `layer` (compression.quantization._kmeans_layers:
    classes deriving from nn.Module, imported here so that discovering this mode needs no torch)."""
    from compression.quantization._kmeans_layers import shared_from as make

    return make(layer, bits)


def _targets(model: nn.Module, cfg: KMeansConfig) -> dict[str, nn.Module]:
    kinds = tuple(getattr(nn, LAYER_KINDS[k]) for k in cfg.layers)
    return {n: m for n, m in model.named_modules() if type(m) in kinds}


class _NoMasks:
    """Pruned weights are code 0 (an exact zero) by construction: nothing to reapply."""

    def after_step(self, model: nn.Module) -> Callable[[int], None]:
        return lambda step: None


class KMeans(Passthrough):
    form = CODEBOOK

    def check(self, model: nn.Module, cfg: KMeansConfig) -> None:
        for name, m in model.named_modules():
            if "conv" in cfg.layers and isinstance(m, nn_kinds(UNSUPPORTED_KINDS)):
                raise ConfigError(f"quantization.mode=kmeans supports Linear and Conv2d; layer "
                                  f"{name!r} is {type(m).__name__}")
        if not _targets(model, cfg):
            raise ConfigError(f"quantization.mode=kmeans: the model has no "
                              f"{'/'.join(cfg.layers)} layer to quantize")

    def quantize(self, model: nn.Module, cfg: KMeansConfig, session: QuantSession | None
                 ) -> Quantized:
        model = copy.deepcopy(model)
        originals = {}
        for name, layer in _targets(model, cfg).items():
            shared = shared_from(layer, cfg.bits)
            shared.load_float(layer.weight, layer.bias, cfg)
            originals[name] = layer.weight.detach()
            model.set_submodule(name, shared)
        if cfg.epochs and session is not None:
            self._tune(model, list(originals), cfg, session)
        errors = WeightErrors()
        for name, ref in originals.items():
            errors.record(name, ref, model.get_submodule(name).weight())
        return errors.attach(Quantized(model.eval(), cfg))

    @staticmethod
    def _tune(model: nn.Module, names: list[str], cfg: KMeansConfig, session: QuantSession
              ) -> None:
        layers = [model.get_submodule(n) for n in names]
        frozen = [p for p in model.parameters() if p.requires_grad]
        for p in frozen:  # only the shared values and biases of the shared layers move
            p.requires_grad_(False)
        for layer in layers:
            layer.start_tuning()
        session.finetune(model, masks=_NoMasks(), epochs=cfg.epochs,  # type: ignore[arg-type]
                         lr=cfg.lr)
        for layer in layers:
            layer.end_tuning()
        for p in frozen:
            p.requires_grad_(True)

    def skeleton(self, model: nn.Module, cfg: KMeansConfig, example: torch.Tensor
                 ) -> nn.Module:
        for name, layer in _targets(model, cfg).items():
            model.set_submodule(name, shared_from(layer, cfg.bits))
        return model


QUANTIZERS.register("kmeans", KMeansConfig, metrics=SQNR)(KMeans())
