"""`lowbit`: weight-only quantization to 2..8 bits or ternary, per-channel or per-group scales,
post-training or with quantization-aware fine-tuning (QAT). Activations stay fp32.

Weights are stored packed (see `packing`), so the artifact's bytes are the real low-bit bytes;
they are dequantized on the fly at run time (see `lowbit_modules`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from compression import validation as v
from compression.errors import ConfigError
from compression.lazy import nn, nn_kinds, torch
from compression.quantization import lowbit_modules as lbm  # its torch: on first use
from compression.quantization.base import (
    QUANTIZERS,
    SQNR,
    Passthrough,
    QuantizationConfig,
    Quantized,
    QuantSession,
    record_weight_error,
)
from compression.quantization.qat import masks_for

BITS: list[int | str] = [2, 3, 4, 5, 6, 7, 8, "ternary"]
LAYER_KINDS: dict[str, str] = {"linear": "Linear", "conv": "Conv2d"}  # torch.nn class names
UNSUPPORTED_KINDS = ("Conv1d", "Conv3d", "ConvTranspose2d")  # torch.nn class names


@dataclass
class LowBitConfig(QuantizationConfig):
    mode: str = "lowbit"
    backend: str = "native"  # our packed layers; torch has no low-bit CPU kernel to pick
    bits: int | str = 4  # 2..8, or "ternary" ({-1, 0, +1} x absmean scale, BitNet b1.58)
    granularity: str = "group"  # one scale per output channel, or per `group_size` weights
    group_size: int = 32  # weights per scale with granularity=group
    qat: bool = False  # fine-tune with fake-quantized weights before packing
    epochs: int = 3  # qat only
    lr: float = 1.0e-4  # qat only
    layers: list[str] = field(default_factory=lambda: ["linear", "conv"])  # linear | conv

    def __post_init__(self) -> None:
        v.one_of("quantization.backend (for mode lowbit)", self.backend, ["native"])
        v.one_of("quantization.bits", self.bits, BITS)
        v.one_of("quantization.granularity", self.granularity, ["channel", "group"])
        v.in_range("quantization.group_size", self.group_size, 1, None, integer=True)
        if not isinstance(self.qat, bool):
            raise ConfigError(f"quantization.qat={self.qat!r} must be true or false")
        v.in_range("quantization.epochs", self.epochs, 1, None, integer=True)
        v.in_range("quantization.lr", self.lr, 0, None, lo_open=True)
        for kind in v.string_list("quantization.layers", self.layers):
            v.one_of("quantization.layers", kind, sorted(LAYER_KINDS))

    @property
    def group(self) -> int | None:
        return self.group_size if self.granularity == "group" else None


def _targets(model: nn.Module, cfg: LowBitConfig) -> dict[str, nn.Module]:
    kinds = tuple(getattr(nn, LAYER_KINDS[k]) for k in cfg.layers)
    return {n: m for n, m in model.named_modules() if type(m) in kinds}


class LowBit(Passthrough):
    def check(self, model: nn.Module, cfg: LowBitConfig) -> None:
        for name, m in model.named_modules():
            if "conv" in cfg.layers and isinstance(m, nn_kinds(UNSUPPORTED_KINDS)):
                raise ConfigError(f"quantization.mode=lowbit supports Linear and Conv2d; layer "
                                  f"{name!r} is {type(m).__name__}")
        if not _targets(model, cfg):
            raise ConfigError(f"quantization.mode=lowbit: the model has no "
                              f"{'/'.join(cfg.layers)} layer to quantize")

    def quantize(self, model: nn.Module, cfg: LowBitConfig, session: QuantSession
                 ) -> Quantized:
        model = copy.deepcopy(model)
        names = list(_targets(model, cfg))
        if cfg.qat:
            for name in names:
                lbm.make_fake_quant(model.get_submodule(name), cfg.bits, cfg.group)
            session.finetune(model, masks=masks_for(model, session.masks, cfg.mode),
                             epochs=cfg.epochs, lr=cfg.lr)
        for name in names:
            layer = model.get_submodule(name)
            packed = lbm.lowbit_from(layer, cfg.bits, cfg.group)
            approx = packed.load_float(layer.weight, layer.bias)
            record_weight_error(session, name, layer.weight.detach(), approx)
            model.set_submodule(name, packed)
        return Quantized(model.eval(), cfg)

    def skeleton(self, model: nn.Module, cfg: LowBitConfig, example: torch.Tensor
                 ) -> nn.Module:
        for name, layer in _targets(model, cfg).items():
            model.set_submodule(name, lbm.lowbit_from(layer, cfg.bits, cfg.group))
        return model


QUANTIZERS.register("lowbit", LowBitConfig, metrics=SQNR)(LowBit())
