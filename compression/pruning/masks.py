"""`mask`: apply user-given per-layer masks from a safetensors file, then fine-tune.

The file maps layer names (e.g. `fc1`, or `fc1.weight`) to tensors shaped like the layer's
weight; nonzero = keep. Its layers must exist with those shapes (checked before training).
`pruning.sparsity` is set from the file (zeros among the masked weights); a different explicit
value is rejected.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from safetensors import SafetensorError

from compression.core import paths
from compression.core.errors import ConfigError
from compression.core.lazy import nn, safetensors_torch, torch
from compression.pruning.base import (
    PRUNERS,
    MaskSet,
    PruneSession,
    PruningConfig,
    register_check,
    select_layers,
)


def read_masks(path: str | Path) -> dict[str, torch.Tensor]:
    """{layer name: bool keep-mask} from a safetensors file."""
    file = paths.resolve(str(path))
    if not file.is_file():
        raise ConfigError(f"pruning.path={str(path)!r}: no such file ({file})")
    try:
        tensors = safetensors_torch.load_file(str(file))
    except (SafetensorError, OSError) as e:
        raise ConfigError(f"pruning.path={str(path)!r} is not a safetensors file: {e}") from None
    return {k.removesuffix(".weight"): t != 0 for k, t in tensors.items()}


@dataclass
class MaskFileConfig(PruningConfig):
    method: str = "mask"
    sparsity: float | None = None  # taken from the file; a different value is rejected
    path: str | None = "masks.safetensors"  # relative to the project root; checked before training
    FIELD_NOTES: ClassVar[dict[str, str]] = {
        "include": "masks for layers outside include/exclude are ignored",
        "overrides": "unused by this method"}

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            raise ConfigError("pruning.path must name a safetensors file of masks, e.g. "
                              "pruning.path=masks.safetensors")
        # A missing file is reported by the pre-training check (so configs still compose).
        from_file = mask_sparsity(read_masks(self.path)) if paths.resolve(
            self.path).is_file() else 0.0
        if self.sparsity is not None and abs(self.sparsity - from_file) > 1e-6:
            raise ConfigError(f"pruning.sparsity={self.sparsity!r} differs from the masks in "
                              f"{self.path} ({from_file:.4f}); leave it null")
        self.sparsity = from_file
        super().__post_init__()


def mask_sparsity(masks: dict[str, torch.Tensor]) -> float:
    return sum(int((~m).sum()) for m in masks.values()) / max(
        1, sum(m.numel() for m in masks.values()))


def _selected(model: nn.Module, cfg: MaskFileConfig) -> dict[str, torch.Tensor]:
    masks = read_masks(cfg.path)
    layers = dict(model.named_modules())
    for name, mask in masks.items():
        weight = getattr(layers.get(name), "weight", None)
        if not isinstance(weight, torch.Tensor):
            raise ConfigError(f"pruning.path={cfg.path}: layer {name!r} is not in the model")
        if weight.shape != mask.shape:
            raise ConfigError(f"pruning.path={cfg.path}: mask for {name!r} has shape "
                              f"{tuple(mask.shape)}, the weight {tuple(weight.shape)}")
    chosen = select_layers(model, cfg)
    return {n: m for n, m in masks.items() if n in chosen}


@register_check("mask")
def check_mask(model: nn.Module, cfg: MaskFileConfig, example: torch.Tensor) -> None:
    _selected(model, cfg)


@PRUNERS.register("mask", MaskFileConfig)
def prune_mask(model: nn.Module, cfg: MaskFileConfig, session: PruneSession) -> MaskSet:
    masks = MaskSet(_selected(model, cfg))
    masks.apply(model)
    session.finetune(model, masks)
    return masks
