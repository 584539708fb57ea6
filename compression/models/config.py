"""The model section of the config and the model registry, without torch: `ModelConfig` is
checked with every other section before anything imports torch (a bad value answers at once).
The built-in models themselves (compression/models/build.py, classes deriving from nn.Module) are
imported when a name is looked up that is not registered yet, which a valid config does.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from compression.core import validation as v
from compression.core.errors import ConfigError
from compression.core.lazy import nn_kinds
from compression.core.registry import Registry

if TYPE_CHECKING:
    from torch import nn

ModelFactory = Callable[..., "nn.Module"]
MODELS: Registry[ModelFactory] = Registry("model.name")
BUILTIN_MODULE = "compression.models.build"  # registers the built-in models when imported

register_model = MODELS.register

# Layers whose `weight` pruning targets: every Linear and Conv (biases and norms excluded).
PRUNABLE_KIND_NAMES = ("Linear", "Conv1d", "Conv2d", "Conv3d")  # torch.nn class names


def model_names() -> list[str]:
    """Every registered model name, the built-ins included (importing them, and torch)."""
    importlib.import_module(BUILTIN_MODULE)
    return sorted(MODELS)


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Layers whose `weight` pruning targets: every Linear and Conv (biases and norms excluded)."""
    kinds = nn_kinds(PRUNABLE_KIND_NAMES)
    return {name: m for name, m in model.named_modules() if isinstance(m, kinds)}


@dataclass
class ModelConfig:
    """`name` picks a built-in model; `target` (`_target_` in YAML) a user factory instead.

    `width` is the framework's multiplier for built-in models only: a user factory's own
    arguments (a `width` of its own included) go to it untouched, in `kwargs`."""

    name: str = "mlp"
    width: float = 1.0
    target: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra arguments for a user factory
    checkpoint: str | None = None  # pretrained weights (safetensors / .pt state_dict)

    def __post_init__(self) -> None:
        v.in_range("model.width", self.width, 0, None, lo_open=True)
        if self.checkpoint is not None and (not isinstance(self.checkpoint, str)
                                            or not self.checkpoint):
            raise ConfigError(f"model.checkpoint={self.checkpoint!r} must be a file path or null")
        if self.target is None:
            if self.name not in MODELS:  # the built-ins register on import
                v.one_of("model.name", self.name, model_names())
        elif not isinstance(self.target, str) or "." not in self.target:
            raise ConfigError(f"model._target_={self.target!r} must be a dotted path to a factory")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        values = dict(values)
        target = values.pop("_target_", None)
        checkpoint = values.pop("checkpoint", None)
        if target is None:
            unknown = sorted(set(values) - {"name", "width"})
            if unknown:
                raise ConfigError(
                    f"model.{unknown[0]} is not a valid key for a built-in model; "
                    "allowed: name, width, checkpoint (or give _target_ for a user model)"
                )
            return cls(**values, checkpoint=checkpoint)
        name = values.pop("name", target.rsplit(".", 1)[-1])
        # everything else, `width` included, is the factory's own argument
        return cls(name=name, target=target, kwargs=values, checkpoint=checkpoint)

    def to_dict(self) -> dict[str, Any]:
        extra = {} if self.checkpoint is None else {"checkpoint": self.checkpoint}
        if self.target is None:
            return {"name": self.name, "width": self.width, **extra}
        return {"_target_": self.target, "name": self.name, **self.kwargs, **extra}
