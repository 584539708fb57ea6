"""Shared pieces of every pruning method: the config base, layer selection, masks, the session."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from compression import validation as v
from compression.data import Splits
from compression.models import prunable_layers
from compression.registry import Registry


@dataclass
class PruningConfig:
    """Fields every method accepts. `include`/`exclude` are fnmatch patterns on layer names."""

    method: str = "none"
    sparsity: float = 0.0
    include: list[str] = field(default_factory=lambda: ["*"])
    exclude: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        v.in_range("pruning.sparsity", self.sparsity, 0, 1, hi_open=True)
        self.include = v.string_list("pruning.include", self.include)
        self.exclude = v.string_list("pruning.exclude", self.exclude)


class MaskSet:
    """Per-layer boolean masks (True = keep) over `weight`; reapplied after every optimizer step
    so fine-tuning cannot revive a pruned weight."""

    def __init__(self, masks: dict[str, torch.Tensor] | None = None) -> None:
        self.masks: dict[str, torch.Tensor] = dict(masks or {})

    def __len__(self) -> int:
        return len(self.masks)

    @torch.no_grad()
    def apply(self, model: nn.Module) -> None:
        modules = dict(model.named_modules())
        for name, mask in self.masks.items():
            modules[name].weight.mul_(mask.to(modules[name].weight.dtype))

    def after_step(self, model: nn.Module) -> Callable[[int], None]:
        return lambda step: self.apply(model)


def select_layers(model: nn.Module, cfg: PruningConfig) -> dict[str, nn.Module]:
    """Prunable layers matching any `include` pattern and no `exclude` pattern."""
    chosen = {}
    for name, module in prunable_layers(model).items():
        if any(fnmatch.fnmatchcase(name, p) for p in cfg.include) and not any(
            fnmatch.fnmatchcase(name, p) for p in cfg.exclude
        ):
            chosen[name] = module
    return chosen


class PruneSession(Protocol):
    """What a method may use besides the model (implemented by `compression.pipeline.Session`):
    the data splits, fine-tuning that keeps masks applied, and places to record structural
    transforms (so the artifact loader can rebuild changed modules) and extra metrics."""

    data: Splits
    transforms: list[dict[str, Any]]
    extra_metrics: dict[str, float]

    def finetune(self, model: nn.Module, masks: MaskSet | None = None, epochs: int | None = None,
                 lr: float | None = None) -> None: ...


# A handler prunes `model` in place (and fine-tunes it through the session) and returns the masks.
PruneHandler = Callable[[nn.Module, PruningConfig, PruneSession], MaskSet]
PRUNERS: Registry[PruneHandler] = Registry("pruning.method")
