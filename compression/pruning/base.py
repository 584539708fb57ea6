"""Shared pieces of every pruning method: the config base, layer selection, masks, the session,
and the pre-training checks."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from compression.core import validation as v
from compression.core.errors import ConfigError
from compression.core.lazy import nn, no_grad, torch
from compression.core.registry import Registry
from compression.data import Splits
from compression.models.config import prunable_layers


@dataclass
class PruningConfig:
    """Fields every method accepts. `include`/`exclude` are fnmatch patterns on layer names.

    `overrides` maps a layer-name pattern to that layer's own target (first matching pattern
    wins; 0 leaves the layer dense). `keep_first_last` leaves the first and last prunable layers
    (in registration order: usually the input layer and the classifier) dense. It is off by
    default so that the logged `sparsity` equals the requested one; turn it on for the usual
    accuracy-friendly recipe.

    `sparse_kernel` runs every selected Linear layer that ends at least `sparse_kernel_min`
    sparse with a CSR sparse kernel instead of a dense one (see pruning/sparse_kernel.py); the
    stored file is the same, only the kernel changes.
    """

    method: str = "none"
    sparsity: float = 0.0  # fraction of weights set to zero, in [0, 1)
    include: list[str] = field(default_factory=lambda: ["*"])  # fnmatch patterns, e.g. ["fc*"]
    exclude: list[str] = field(default_factory=list)  # e.g. ["fc3"] keeps the classifier dense
    # per-layer targets, first match wins: pruning.overrides={fc3:0,conv*:0.3}
    overrides: dict[str, float] | None = None
    keep_first_last: bool = False  # true: leave the first and last prunable layers dense
    sparse_kernel: bool = False  # true: Linear layers >= sparse_kernel_min sparse run a CSR kernel
    sparse_kernel_min: float = 0.9  # (fp32 only; the speed-up is measured, see README)

    def __post_init__(self) -> None:
        v.in_range("pruning.sparsity", self.sparsity, 0, 1, hi_open=True)
        self.include = v.string_list("pruning.include", self.include)
        self.exclude = v.string_list("pruning.exclude", self.exclude)
        if self.overrides is None:  # YAML null, so `pruning.overrides={...}` can set it
            self.overrides = {}
        if not isinstance(self.overrides, dict):
            raise ConfigError(f"pruning.overrides={self.overrides!r} must be a mapping "
                              "{layer pattern: sparsity}, e.g. {fc3: 0}")
        self.overrides = dict(self.overrides)
        for pattern, value in self.overrides.items():
            v.in_range(f"pruning.overrides.{pattern}", value, 0, 1, hi_open=True)
        if not isinstance(self.keep_first_last, bool):
            raise ConfigError(f"pruning.keep_first_last={self.keep_first_last!r} must be "
                              "true or false")
        if not isinstance(self.sparse_kernel, bool):
            raise ConfigError(f"pruning.sparse_kernel={self.sparse_kernel!r} must be true or "
                              "false")
        v.in_range("pruning.sparse_kernel_min", self.sparse_kernel_min, 0, 1, lo_open=True)
        if self.sparse_kernel and self.no_zeros_because():
            raise ConfigError(f"pruning.sparse_kernel=true needs zero weights to skip, and "
                              f"pruning.method={self.method} {self.no_zeros_because()}; use it "
                              "with unstructured, random, block, nm, mask, or structured with "
                              "pruning.physical=false")

    def removes_channels(self) -> bool:
        """True for methods whose point is all-zero (or removed) channels: no dead-channel
        warning then."""
        return False

    def no_zeros_because(self) -> str:
        """Why this method's result holds no zero weights for a sparse kernel ('' if it does)."""
        return ""

    def prunes(self) -> bool:
        """False for a config that leaves the model dense (its runs list no pruned layers)."""
        return True

    def run_label(self) -> str:
        """This part of a run's default MLflow name, e.g. `unstructured0.9`."""
        return f"{self.method}{self.sparsity:g}"


class MaskSet:
    """Boolean masks (True = keep) keyed by layer name (over its `weight`) or by a parameter's or
    buffer's full name (`conv1.bias`, `bn1.running_mean`: structured pruning zeroes a channel's
    bias and norm too); reapplied after every optimizer step so fine-tuning cannot revive a
    pruned weight."""

    def __init__(self, masks: dict[str, torch.Tensor] | None = None) -> None:
        self.masks: dict[str, torch.Tensor] = dict(masks or {})

    def __len__(self) -> int:
        return len(self.masks)

    @staticmethod
    def target(modules: dict[str, nn.Module], key: str) -> torch.Tensor | None:
        """The tensor `key` masks in a model whose modules are `modules` (None if absent)."""
        if key in modules:
            t = getattr(modules[key], "weight", None)
        else:
            owner, _, attr = key.rpartition(".")
            t = getattr(modules.get(owner), attr, None)
        return t if isinstance(t, torch.Tensor) else None

    @no_grad
    def apply(self, model: nn.Module) -> None:
        modules = dict(model.named_modules())
        for key, mask in self.masks.items():
            t = self.target(modules, key)
            assert t is not None, key  # masks are made for, and checked against, this model
            t.mul_(mask.to(t.dtype))

    def after_step(self, model: nn.Module) -> Callable[[int], None]:
        return lambda step: self.apply(model)


def select_layers(model: nn.Module, cfg: PruningConfig) -> dict[str, nn.Module]:
    """Prunable layers matching any `include` pattern and no `exclude` pattern (and not the
    first or last prunable layer when `keep_first_last`)."""
    layers = prunable_layers(model)
    ends = {next(iter(layers)), next(reversed(layers))} if cfg.keep_first_last and layers else set()
    chosen = {}
    for name, module in layers.items():
        if name in ends:
            continue
        if any(fnmatch.fnmatchcase(name, p) for p in cfg.include) and not any(
            fnmatch.fnmatchcase(name, p) for p in cfg.exclude
        ):
            chosen[name] = module
    return chosen


def layer_targets(model: nn.Module, cfg: PruningConfig) -> dict[str, float]:
    """Each selected layer's target: the first matching `overrides` pattern, else
    `cfg.sparsity`. Layers whose target is 0 are left out (they stay dense)."""
    targets = {}
    for name in select_layers(model, cfg):
        match = next((p for p in cfg.overrides if fnmatch.fnmatchcase(name, p)), None)
        target = cfg.sparsity if match is None else float(cfg.overrides[match])
        if target > 0:
            targets[name] = target
    return targets


def check_overrides_match(model: nn.Module, cfg: PruningConfig) -> None:
    """A typo in an override pattern would silently prune at the default rate: refuse it."""
    names = list(prunable_layers(model))
    for pattern in cfg.overrides:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            raise ConfigError(f"pruning.overrides: pattern {pattern!r} matches no prunable layer;"
                              f" layers: {', '.join(names)}")


class PruneSession(Protocol):
    """What a method may use besides the model (implemented by `compression.run.session.Session`):
    the run config and data splits, fine-tuning that keeps masks applied, and calibration
    batches. A method reads from it and returns what it did: a `PruneResult` (masks, the
    structural transforms the artifact loader replays, metrics), or a bare `MaskSet`."""

    rc: Any  # compression.config.run.RunConfig (not imported: config imports this package)
    data: Splits

    def finetune(self, model: nn.Module, masks: MaskSet | None = None, epochs: int | None = None,
                 lr: float | None = None) -> None: ...

    def calibration_batches(self, n: int) -> list[torch.Tensor]:
        """The first `n` training input batches (Wanda, SparseGPT)."""
        ...


# A handler prunes `model` in place (and fine-tunes it through the session) and returns the masks.
@dataclass
class PruneResult:
    """What a pruning method returns: the masks to keep applied through fine-tuning and
    quantization, the structural transforms it made (recorded in the artifact, replayed by the
    loader to rebuild the smaller modules) and its own run metrics (those its entry declares).
    A handler returning a bare MaskSet made no transform and logs nothing of its own."""

    masks: MaskSet = field(default_factory=MaskSet)
    transforms: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, out: MaskSet | PruneResult) -> PruneResult:
        return out if isinstance(out, PruneResult) else cls(out)


PruneHandler = Callable[["nn.Module", PruningConfig, PruneSession], "MaskSet | PruneResult"]
PRUNERS: Registry[PruneHandler] = Registry("pruning.method")

# Optional per-method checks run on a fresh (untrained) model before any training, so that a
# method that cannot handle the model fails in one line before the baseline is trained.
PruneCheck = Callable[["nn.Module", PruningConfig, "torch.Tensor"], None]
CHECKS: Registry[PruneCheck] = Registry("pruning.method (check)")
register_check = CHECKS.register


def check(model: nn.Module, cfg: PruningConfig, example: torch.Tensor) -> None:
    """Raise a one-line ConfigError if `cfg` cannot prune `model` (a fresh, untrained
    instance; `example` is one input batch). Called before any training."""
    check_overrides_match(model, cfg)
    if cfg.method != "none" and not select_layers(model, cfg):
        names = ", ".join(prunable_layers(model))
        raise ConfigError(f"pruning.method={cfg.method}: pruning.include={cfg.include}, "
                          f"exclude={cfg.exclude} and keep_first_last={cfg.keep_first_last} "
                          f"leave no layer to prune; prunable layers: {names}")
    if cfg.method in CHECKS:
        CHECKS[cfg.method](model, cfg, example)
