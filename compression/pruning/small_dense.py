"""The small-dense comparison: the dense model whose width multiplier gives as many parameters
as a pruned run has nonzero ones ("can a smaller dense model do as well?").

`pruning=small_dense pruning.match_nonzero=<nonzero_params of the pruned run>` sets
`model.width` through the `${width_for_nonzero:<count>}` resolver and keeps `pruning.method=none`,
so such runs are the dense series at width < 1.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from compression.core.errors import ConfigError
from compression.core.lazy import torch
from compression.core.registry import build_dataclass
from compression.data import DataConfig, DataSpec
from compression.models.config import ModelConfig

MIN_WIDTH, MAX_WIDTH = 1e-3, 4.0


class WidthError(ConfigError, InterpolationResolutionError):
    """A ConfigError that OmegaConf lets through its resolver machinery unwrapped, so the user
    sees one line (train.py reports ConfigErrors without a traceback)."""

    def __str__(self) -> str:  # OmegaConf appends `full_key: ...` lines; keep the first
        return super().__str__().splitlines()[0]


def dense_params(model_cfg: ModelConfig, spec: DataSpec, width: float) -> int:
    """Parameter count at `width`, built on the meta device (no memory, no init cost)."""
    cfg = ModelConfig(name=model_cfg.name, width=width, target=model_cfg.target,
                      kwargs=model_cfg.kwargs)
    with torch.device("meta"):
        from compression.models.build import build_model

        return sum(p.numel() for p in build_model(cfg, spec).parameters())


def width_for_nonzero(model_cfg: ModelConfig, spec: DataSpec, nonzero: int) -> float:
    """The width multiplier whose dense parameter count is closest to `nonzero`.

    Counts are a non-decreasing step function of the width (layer sizes are rounded), so a
    bisection finds the step that crosses `nonzero`; the closer of its two sides wins."""
    if model_cfg.target is not None:
        raise WidthError("pruning=small_dense needs a built-in model: a user factory "
                          "(model._target_) has no width multiplier")
    lo, hi = MIN_WIDTH, MAX_WIDTH
    if not dense_params(model_cfg, spec, lo) <= nonzero <= dense_params(model_cfg, spec, hi):
        raise WidthError(f"pruning.match_nonzero={nonzero} is out of reach for model "
                          f"{model_cfg.name!r} (widths {MIN_WIDTH:g}..{MAX_WIDTH:g})")
    for _ in range(40):  # params(lo) <= nonzero <= params(hi), interval halves each step
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if dense_params(model_cfg, spec, mid) <= nonzero else (lo, mid)
    below, above = round(lo, 6), round(hi, 6)
    gap = lambda w: abs(dense_params(model_cfg, spec, w) - nonzero)  # noqa: E731
    return below if gap(below) <= gap(above) else above


def _resolve_width(nonzero: Any, *, _root_: DictConfig) -> float:
    """`${width_for_nonzero:<count>}`: reads the model and data sections of the config."""
    from compression.data import load

    if isinstance(nonzero, bool) or not isinstance(nonzero, int) or nonzero < 1:
        raise WidthError(f"pruning.match_nonzero={nonzero!r} must be a positive integer")
    model = OmegaConf.to_container(_root_.model, resolve=False)
    model = {k: v for k, v in model.items() if k != "width"}  # the key being resolved
    data = build_dataclass(DataConfig, OmegaConf.to_container(_root_.data, resolve=True), "data")
    return width_for_nonzero(ModelConfig.from_dict(model), load(data).spec, nonzero)


if not OmegaConf.has_resolver("width_for_nonzero"):
    OmegaConf.register_new_resolver("width_for_nonzero", _resolve_width)
