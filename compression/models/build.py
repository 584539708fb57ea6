"""Built-in models (from a registry) and user models (any nn.Module factory via `_target_`).

Every built-in model takes a width multiplier so that a smaller dense model can be trained for the
"would an equally small dense model do as well?" comparison.
"""

from __future__ import annotations

import inspect
from typing import Any

from compression.core.errors import ConfigError, first_line
from compression.core.lazy import nn, nn_kinds, torch
from compression.data import DataSpec
from compression.models.charlm import CharLM
from compression.models.config import (  # noqa: F401 (their home before; importers keep it)
    MODELS,
    PRUNABLE_KIND_NAMES,
    ModelConfig,
    ModelFactory,
    prunable_layers,
    register_model,
)
from compression.models.vit import ViT


def _w(channels: int, width: float) -> int:
    return max(1, round(channels * width))


def check_fits(model: nn.Module, spec: DataSpec, cfg: ModelConfig) -> None:
    """Refuse, in one line and before any training, a model that cannot take the data's input
    or does not give one score per class (a user factory built for other data, say)."""
    what = f"model._target_={cfg.target!r}" if cfg.target else f"model.name={cfg.name}"
    shape = (1, *spec.input_shape)
    was_training = model.training
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(shape))
    except Exception as e:  # any failure of a user's forward: say which and where
        raise ConfigError(f"{what} cannot run on {spec.name} inputs of shape {shape}: "
                          f"{type(e).__name__}: {first_line(e)}") from None
    finally:
        model.train(was_training)
    # sequence data (data=text): one score per class at every position, (1, C, T)
    want = (1, spec.num_classes, *spec.input_shape) if spec.sequence else (1, spec.num_classes)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != want:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        per = " at every position" if spec.sequence else ""
        raise ConfigError(f"{what} gives {got} for a {shape} input; {spec.name} needs "
                          f"{want}: one score per class{per}")


def factory_of(cfg: ModelConfig) -> ModelFactory:
    """The callable that builds `cfg`'s model: a built-in class or the user's `_target_`."""
    if cfg.target is None:
        return MODELS[cfg.name]
    from hydra.utils import get_method

    try:
        return get_method(cfg.target)
    except Exception as e:  # hydra wraps import errors; keep the message to one line
        raise ConfigError(f"model._target_={cfg.target!r} cannot be imported: {e}") from None


def factory_kwargs(factory: ModelFactory, cfg: ModelConfig) -> dict[str, Any]:
    """The factory's arguments: `width` goes to a factory that names a `width` parameter,
    untouched. One that does not gets none: a `width` of 1 is the built-in models' default
    carried over from their config (`+model._target_=...` on top of model=mlp) and is dropped;
    any other value is refused, rather than labelling and caching a run with a width that
    built nothing."""
    kwargs = dict(cfg.kwargs)
    if "width" not in kwargs:
        return kwargs
    try:
        takes_width = "width" in inspect.signature(factory).parameters
    except (TypeError, ValueError):  # no signature to read (a builtin): pass everything
        return kwargs
    if takes_width:
        return kwargs
    if kwargs["width"] != 1:
        raise ConfigError(f"model.width={kwargs['width']!r}: model._target_={cfg.target!r} takes "
                          "no width argument (model.width scales the built-in models only)")
    del kwargs["width"]
    return kwargs


def build_model(cfg: ModelConfig, spec: DataSpec) -> nn.Module:
    """Build a fresh fp32 model for inputs described by `spec`."""
    if cfg.target is not None:
        factory = factory_of(cfg)
        kwargs = factory_kwargs(factory, cfg)
        try:
            model = factory(**kwargs)
        except (TypeError, ValueError) as e:  # wrong or missing keyword arguments, bad values
            raise ConfigError(f"model._target_={cfg.target!r} with {kwargs} cannot build a "
                              f"model: {type(e).__name__}: {e}") from None
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model._target_={cfg.target!r} returned {type(model).__name__}, "
                              "not an nn.Module")
        return model
    return MODELS[cfg.name](spec, width=cfg.width)


@register_model("mlp")
class MLP(nn.Module):
    """LeNet-300-100: two hidden fully connected layers."""

    def __init__(self, spec: DataSpec, width: float = 1.0) -> None:
        super().__init__()
        h1, h2 = _w(300, width), _w(100, width)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(spec.features, h1)
        self.fc2 = nn.Linear(h1, h2)
        self.fc3 = nn.Linear(h2, spec.num_classes)
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, H, W) -> (B, classes)
        x = self.relu1(self.fc1(self.flatten(x)))
        return self.fc3(self.relu2(self.fc2(x)))


@register_model("lenet5")
class LeNet5(nn.Module):
    """LeNet-5 (conv 6 -> conv 16 -> fc 120 -> fc 84). On 8x8 digits conv2 pads to keep 2x2."""

    def __init__(self, spec: DataSpec, width: float = 1.0) -> None:
        super().__init__()
        c1, c2 = _w(6, width), _w(16, width)
        pad2 = 0 if spec.image_size >= 16 else 2
        self.conv1 = nn.Conv2d(spec.in_channels, c1, 5, padding=2)
        self.conv2 = nn.Conv2d(c1, c2, 5, padding=pad2)
        self.relu1, self.relu2, self.relu3, self.relu4 = (nn.ReLU() for _ in range(4))
        self.pool1, self.pool2 = nn.MaxPool2d(2), nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        side = spec.image_size // 2
        side = (side + 2 * pad2 - 4) // 2
        self.fc1 = nn.Linear(c2 * side * side, _w(120, width))
        self.fc2 = nn.Linear(_w(120, width), _w(84, width))
        self.fc3 = nn.Linear(_w(84, width), spec.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.flatten(self.pool2(self.relu2(self.conv2(x))))
        return self.fc3(self.relu4(self.fc2(self.relu3(self.fc1(x)))))


class BasicBlock(nn.Module):
    """conv-bn-relu-conv-bn plus a shortcut (1x1 conv + bn when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))  # the residual add couples channels


@register_model("resnet")
class ResNet(nn.Module):
    """A small ResNet: stem + three basic blocks (16, 32, 64 channels) + global pool + fc."""

    def __init__(self, spec: DataSpec, width: float = 1.0) -> None:
        super().__init__()
        c = [_w(16, width), _w(32, width), _w(64, width)]
        self.stem = nn.Sequential(
            nn.Conv2d(spec.in_channels, c[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(c[0]),
            nn.ReLU(),
        )
        self.layer1 = BasicBlock(c[0], c[0], 1)
        self.layer2 = BasicBlock(c[0], c[1], 2)
        self.layer3 = BasicBlock(c[1], c[2], 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c[2], spec.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(self.flatten(self.pool(x)))


@register_model("vit")
def vit(spec: DataSpec, width: float = 1.0) -> nn.Module:
    """A tiny Vision Transformer (models_vit.py): 4x4 patches, 4 pre-norm blocks of 4 heads."""
    return ViT(spec.in_channels, spec.image_size, spec.num_classes, width)


@register_model("charlm")
def charlm(spec: DataSpec, width: float = 1.0) -> nn.Module:
    """A tiny decoder-only byte LM (models_charlm.py): 4 causal pre-norm blocks of 4 heads."""
    if not spec.sequence or len(spec.input_shape) != 1:
        raise ConfigError(f"model.name=charlm reads byte sequences; data {spec.name} gives "
                          f"inputs of shape {spec.input_shape} (use data=text)")
    return CharLM(spec.num_classes, spec.input_shape[0], width)


PRUNABLE_KINDS = nn_kinds(PRUNABLE_KIND_NAMES)


def example_user_model(in_channels: int = 1, num_classes: int = 10, hidden: int = 32) -> nn.Module:
    """An example of a user factory (conf/model/custom.yaml): any callable returning a Module."""
    return nn.Sequential(
        nn.Conv2d(in_channels, hidden, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(hidden * 16, num_classes),
    )
