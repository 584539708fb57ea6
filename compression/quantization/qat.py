"""`qat_int8`: quantization-aware fine-tuning with fake quantization, then real int8 kernels.

The model is traced and fused as for static_int8, fine-tuned with weights and activations
fake-quantized (straight-through gradients) while the pruning masks stay applied after every
step, then converted. Zeros stay zeros: a masked weight is exactly 0 before conversion, and
symmetric or affine int8 both represent 0 exactly.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING

from compression.core import validation as v
from compression.core.errors import ConfigError
from compression.core.lazy import LazyModule, nn, torch
from compression.quantization.base import (
    INT8_STATIC,
    QUANTIZERS,
    SQNR,
    STORED_BITS,
    Quantized,
    QuantSession,
)
from compression.quantization.static import (
    Int8Config,
    check_graph_model,
    convert_measured,
    convert_skeleton,
)

ao = LazyModule("compression.quantization.backends.torch_ao")  # torch.ao: imported on first use

if TYPE_CHECKING:  # a runtime import would cycle: pruning -> export -> quantization
    from compression.pruning.base import MaskSet


@dataclass
class QatInt8Config(Int8Config):
    mode: str = "qat_int8"
    epochs: int = 3  # QAT fine-tuning epochs (after pruning's own fine-tuning)
    lr: float = 1.0e-4  # small: the weights are already trained, only rounding is learned

    def __post_init__(self) -> None:
        super().__post_init__()
        v.in_range("quantization.epochs", self.epochs, 1, None, integer=True)
        v.in_range("quantization.lr", self.lr, 0, None, lo_open=True)


def masks_for(model: nn.Module, masks: MaskSet, mode: str) -> MaskSet:
    """The pruning masks, checked against the model QAT trains (fused layers keep their names
    and `.weight`), so a mask can never silently stop applying."""
    from compression.pruning.base import MaskSet as Masks  # see the TYPE_CHECKING import

    modules = dict(model.named_modules())
    for name, mask in masks.masks.items():
        w = Masks.target(modules, name)
        if w is None or w.shape != mask.shape:
            raise ConfigError(f"quantization.mode={mode}: pruned layer {name!r} has no "
                              "matching weight in the QAT model; cannot keep its mask applied")
    return masks


class QatInt8:
    form = INT8_STATIC

    def qconfig(self, cfg: QatInt8Config) -> ao.QConfig:
        return ao.qat_qconfig(cfg.granularity == "channel", cfg.scheme == "symmetric",
                              cfg.engine)

    def check(self, model: nn.Module, cfg: QatInt8Config) -> None:
        check_graph_model(model, cfg.mode)

    def quantize(self, model: nn.Module, cfg: QatInt8Config, session: QuantSession
                 ) -> Quantized:
        batch = session.calibration_batches(1)[0]
        prepared = ao.prepare_qat(copy.deepcopy(model), self.qconfig(cfg), batch[:1], cfg.engine)
        masks = masks_for(prepared, session.masks, cfg.mode)
        masks.apply(prepared)
        session.finetune(prepared, masks=masks, epochs=cfg.epochs, lr=cfg.lr)
        return convert_measured(prepared, cfg, batch)

    def skeleton(self, model: nn.Module, cfg: QatInt8Config, example: torch.Tensor
                 ) -> nn.Module:
        prepared = ao.prepare_qat(model, self.qconfig(cfg), example, cfg.engine)
        return convert_skeleton(prepared, example, cfg.engine)

    def cast_input(self, x: torch.Tensor) -> torch.Tensor:
        return x


QUANTIZERS.register("qat_int8", QatInt8Config,
                    metrics=(*SQNR, *STORED_BITS))(QatInt8())
