"""`lowbit`: weight-only quantization to 2..8 bits or ternary, per-channel or per-group scales,
post-training or with quantization-aware fine-tuning (QAT). Activations stay fp32.

Bits are one per run (`bits`), or per layer (mixed precision): set by hand in `layer_bits`, or
allocated under an average-bits budget from a sensitivity pass (`allocation: sensitivity`, see
quantization/allocation.py); a layer at 32 bits stays fp32. The artifact records `layer_bits`.

Weights are stored packed (see `packing`), so the artifact's bytes are the real low-bit bytes;
how they run is `kernel` (see `lowbit_kernels`): dequantized on every call, dequantized once and
cached, or torch's weight-only int8 / int4 CPU kernels; `auto` times them per layer and keeps the
fastest (the tag `lowbit_kernel` says which ran where).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field

from compression.core import validation as v
from compression.core.errors import ConfigError
from compression.core.lazy import nn, nn_kinds, torch
from compression.quantization import lowbit_kernels as kernels
from compression.quantization import lowbit_modules as lbm  # its torch: on first use
from compression.quantization.base import (
    QUANTIZERS,
    SQNR,
    STORED_BITS,
    WEIGHT_ONLY,
    Passthrough,
    QuantizationConfig,
    Quantized,
    QuantSession,
    WeightErrors,
)
from compression.quantization.qat import masks_for

BITS: list[int | str] = [2, 3, 4, 5, 6, 7, 8, "ternary"]
FP32 = 32  # a layer "quantized" to 32 bits is left as it is (fp32)
LAYER_BITS: list[int | str] = [*BITS, FP32]
ALLOCATIONS = ("uniform", "sensitivity")
LAYER_KINDS: dict[str, str] = {"linear": "Linear", "conv": "Conv2d"}  # torch.nn class names
UNSUPPORTED_KINDS = ("Conv1d", "Conv3d", "ConvTranspose2d")  # torch.nn class names


@dataclass
class LowBitConfig(QuantizationConfig):
    mode: str = "lowbit"
    backend: str = "native"  # our packed layers (how they run: `kernel`)
    bits: int | str = 4  # 2..8, or "ternary" ({-1, 0, +1} x absmean scale, BitNet b1.58)
    granularity: str = "group"  # one scale per output channel, or per `group_size` weights
    group_size: int = 32  # weights per scale with granularity=group
    qat: bool = False  # fine-tune with fake-quantized weights before packing
    epochs: int = 3  # qat only
    lr: float = 1.0e-4  # qat only
    layers: list[str] = field(default_factory=lambda: ["linear", "conv"])  # linear | conv
    # uniform: every layer at `bits` (or its `layer_bits`); sensitivity: per-layer bits from a
    # sensitivity pass, within budget_bits (quantization/allocation.py)
    allocation: str = "uniform"
    budget_bits: float = 4.0  # sensitivity only: average stored bits per quantized weight, at most
    # sensitivity only: the widths a layer may get (32: left fp32)
    bit_choices: list[int] = field(default_factory=lambda: [2, 4, 8, 32])
    # per-layer bits by exact layer name, e.g. {fc3: 8} (32: leave fp32); with
    # allocation=sensitivity, the allocation's output (recorded in the artifact)
    layer_bits: dict[str, int | str] | None = None
    kernel: str = "auto"  # auto (fastest per layer, timed) | unpack | cached | int8pack | int4pack
    layer_kernels: dict[str, str] | None = None  # auto's picks (set by quantize, not by you)

    def __post_init__(self) -> None:
        v.one_of("quantization.kernel", self.kernel, [kernels.AUTO, *kernels.KERNELS])
        for name, kernel in (self.layer_kernels or {}).items():
            v.one_of(f"quantization.layer_kernels.{name}", kernel, list(kernels.KERNELS))
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
        self._check_mixed()

    def _check_mixed(self) -> None:
        v.one_of("quantization.allocation", self.allocation, list(ALLOCATIONS))
        if not isinstance(self.bit_choices, list | tuple) or not self.bit_choices:
            raise ConfigError(f"quantization.bit_choices={self.bit_choices!r} must be a "
                              "non-empty list of bit widths, e.g. [2, 4, 8, 32]")
        for b in self.bit_choices:
            v.one_of("quantization.bit_choices", b, [2, 3, 4, 5, 6, 7, 8, FP32])
        self.bit_choices = sorted(set(self.bit_choices))
        v.in_range("quantization.budget_bits", self.budget_bits, 0, FP32, lo_open=True)
        if self.allocation == "sensitivity" and self.budget_bits < self.bit_choices[0]:
            raise ConfigError(f"quantization.budget_bits={self.budget_bits!r} is below the "
                              f"smallest of quantization.bit_choices ({self.bit_choices[0]}): "
                              "no allocation fits it")
        if self.layer_bits is None:  # YAML null, so `quantization.layer_bits={...}` can set it
            self.layer_bits = {}
        if not isinstance(self.layer_bits, dict):
            raise ConfigError(f"quantization.layer_bits={self.layer_bits!r} must be a mapping "
                              "{layer: bits}, e.g. {fc3: 8}")
        self.layer_bits = dict(self.layer_bits)
        for name, b in self.layer_bits.items():
            v.one_of(f"quantization.layer_bits.{name}", b, LAYER_BITS)

    def label(self) -> str:
        if self.allocation == "sensitivity":
            return f"{self.mode}/mixed<={self.budget_bits:g}"
        return f"{self.mode}/{self.bits}"

    def bits_of(self, layer: str) -> int | str:
        """The layer's bit width: its `layer_bits` entry, else `bits` (32: left fp32)."""
        assert self.layer_bits is not None
        return self.layer_bits.get(layer, self.bits)

    @property
    def group(self) -> int | None:
        return self.group_size if self.granularity == "group" else None


def _targets(model: nn.Module, cfg: LowBitConfig) -> dict[str, nn.Module]:
    kinds = tuple(getattr(nn, LAYER_KINDS[k]) for k in cfg.layers)
    return {n: m for n, m in model.named_modules() if type(m) in kinds}


class LowBit(Passthrough):
    form = WEIGHT_ONLY

    def check(self, model: nn.Module, cfg: LowBitConfig) -> None:
        targets = _targets(model, cfg)
        assert cfg.layer_bits is not None
        if cfg.layer_bits and cfg.allocation == "sensitivity":
            raise ConfigError("quantization.layer_bits is what quantization.allocation="
                              "sensitivity decides; set one or the other")
        unknown = sorted(set(cfg.layer_bits) - set(targets))
        if unknown:
            raise ConfigError(f"quantization.layer_bits.{unknown[0]}: not a layer this mode "
                              f"quantizes; they are: {', '.join(targets) or 'none'}")
        for name, m in model.named_modules():
            if "conv" in cfg.layers and isinstance(m, nn_kinds(UNSUPPORTED_KINDS)):
                raise ConfigError(f"quantization.mode=lowbit supports Linear and Conv2d; layer "
                                  f"{name!r} is {type(m).__name__}")
        if not targets:
            raise ConfigError(f"quantization.mode=lowbit: the model has no "
                              f"{'/'.join(cfg.layers)} layer to quantize")

    def quantize(self, model: nn.Module, cfg: LowBitConfig, session: QuantSession
                 ) -> Quantized:
        model = copy.deepcopy(model)
        names = [n for n in _targets(model, cfg) if cfg.bits_of(n) != FP32]
        if cfg.qat:
            for name in names:
                lbm.make_fake_quant(model.get_submodule(name), cfg.bits_of(name), cfg.group)
            session.finetune(model, masks=masks_for(model, session.masks, cfg.mode),
                             epochs=cfg.epochs, lr=cfg.lr)
        errors = WeightErrors()
        for name in names:
            layer = model.get_submodule(name)
            packed = lbm.lowbit_from(layer, cfg.bits_of(name), cfg.group)
            approx = packed.load_float(layer.weight, layer.bias)
            errors.record(name, layer.weight.detach(), approx)
            model.set_submodule(name, packed)
        return errors.attach(_run_kernels(model.eval(), cfg, session))

    def skeleton(self, model: nn.Module, cfg: LowBitConfig, example: torch.Tensor
                 ) -> nn.Module:
        for name, layer in _targets(model, cfg).items():
            if cfg.bits_of(name) != FP32:
                packed = lbm.lowbit_from(layer, cfg.bits_of(name), cfg.group)
                packed.set_kernel(_kernel_of(packed, name, cfg))
                model.set_submodule(name, packed)
        return model


def _kernel_of(layer: lbm.LowBitLayer, name: str, cfg: LowBitConfig) -> str:
    """What `layer` runs: the recorded pick of `auto`, else the kernel asked for where the
    layer can run it (else unpack)."""
    picked = (cfg.layer_kernels or {}).get(name)
    return picked if picked is not None else kernels.resolve(layer, cfg.kernel)


def _run_kernels(model: nn.Module, cfg: LowBitConfig, session: QuantSession | None
                 ) -> Quantized:
    """Set every layer's kernel (`auto`: timed on batch 1 and a training batch, per layer);
    the config as carried out records each layer's kernel, the tag `lowbit_kernel` names them
    and, for auto, `quant_auto_unpack_ms` / `quant_auto_picked_ms` sum the layers' timed
    scores of unpacking on every call and of the picks."""
    layers = {n: m for n, m in model.named_modules() if isinstance(m, lbm.LowBitLayer)}
    batches = session.calibration_batches(1) if session is not None else []
    metrics: dict[str, float] = {}
    if cfg.kernel == kernels.AUTO and batches:
        picks, scores = kernels.pick_kernels(model, layers, [batches[0][:1], batches[0]])
        if scores:
            metrics = {"quant_auto_unpack_ms": sum(s["unpack"] for s in scores.values()),
                       "quant_auto_picked_ms": sum(s[picks[n]] for n, s in scores.items())}
    else:
        picks = {n: _kernel_of(m, n, cfg) for n, m in layers.items()}
    for name, kernel in picks.items():
        layers[name].set_kernel(kernel)
    return Quantized(model, dataclasses.replace(cfg, layer_kernels=picks),
                     {"lowbit_kernel": kernel_tag(picks)}, metrics)


def kernel_tag(picks: dict[str, str]) -> str:
    """`cached` when every layer runs one kernel, else `int8pack: fc1, fc2; unpack: fc3`."""
    by_kernel: dict[str, list[str]] = {}
    for name, kernel in picks.items():
        by_kernel.setdefault(kernel, []).append(name)
    if len(by_kernel) == 1:
        return next(iter(by_kernel))
    return "; ".join(f"{k}: {', '.join(names)}" for k, names in by_kernel.items())


QUANTIZERS.register("lowbit", LowBitConfig,
                    metrics=(*SQNR, *STORED_BITS))(LowBit())
