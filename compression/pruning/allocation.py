"""Per-layer sparsity allocation from a sensitivity pass (`pruning.allocation=sensitivity`).

Uniform allocation prunes every selected layer to `pruning.sparsity`. Layers differ, though: a
wide first layer tolerates far more pruning than a small classifier. Here each selected layer is
pruned alone (lowest |w|, no fine-tuning) at LEVELS and the validation accuracy measured, which
gives one sensitivity curve per layer (cached beside the baseline). A greedy pass over those
curves (as AIMET's and NNCF's per-layer searches do) then spends the global budget - exactly
round(sparsity x selected weights) zeros - where it costs the least accuracy per weight removed.
The allocated per-layer targets become the run's `overrides`, so every schedule and criterion
applies unchanged.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
from dataclasses import replace
from pathlib import Path

from compression.core import paths
from compression.core.errors import ConfigError
from compression.core.lazy import inference_mode, nn, torch
from compression.pruning.base import PruningConfig, layer_targets

log = logging.getLogger(__name__)

ALLOCATIONS = ("uniform", "sensitivity")
LEVELS = (0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995)
VAL_SAMPLES = 1024  # enough to rank layers; keeps the pass to seconds on small models

Curves = dict[str, list[float]]  # layer -> val accuracy at each of LEVELS


@inference_mode
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((model(x).argmax(1) == y).float().mean())


@inference_mode
def sensitivity_curves(model: nn.Module, layers: list[str], x: torch.Tensor, y: torch.Tensor
                       ) -> tuple[float, Curves]:
    """(dense accuracy, per-layer accuracy at each level with only that layer pruned)."""
    model.eval()
    base = _accuracy(model, x, y)
    curves: Curves = {}
    for name in layers:
        weight = model.get_submodule(name).weight
        original = weight.detach().clone()
        order = original.abs().flatten().argsort()  # ascending |w|: pruned first
        curves[name] = []
        for level in LEVELS:
            flat = original.flatten().clone()
            flat[order[: round(level * flat.numel())]] = 0
            weight.copy_(flat.view_as(original))
            curves[name].append(_accuracy(model, x, y))
        weight.copy_(original)
    return base, curves


def allocate(sizes: dict[str, int], curves: Curves, base: float, budget: int) -> dict[str, int]:
    """Zeros per layer summing to exactly `budget`: greedily take the next level of the layer
    whose step costs the least accuracy per weight removed (drops made non-decreasing in the
    level, so noise cannot make more pruning look free). The last step is cut to the budget."""
    if budget > sum(round(LEVELS[-1] * n) for n in sizes.values()):
        raise ConfigError(f"sensitivity allocation places at most {LEVELS[-1]} of each layer's "
                          f"weights; {budget} of {sum(sizes.values())} is beyond that")
    drops = {}
    for name, accs in curves.items():
        running, d = 0.0, [0.0]
        for acc in accs:
            running = max(running, base - acc)
            d.append(running)
        drops[name] = d
    levels = (0.0, *LEVELS)
    index = dict.fromkeys(sizes, 0)
    zeros = dict.fromkeys(sizes, 0)
    total, last = 0, None
    while total < budget:
        def cost(name: str) -> tuple[float, int]:
            i, n = index[name], sizes[name]
            gained = round(levels[i + 1] * n) - round(levels[i] * n)
            return (drops[name][i + 1] - drops[name][i]) / max(1, gained), -gained

        open_layers = [n for n in sizes if index[n] + 1 < len(levels)]
        last = min(open_layers, key=cost)
        index[last] += 1
        new = round(levels[index[last]] * sizes[last])
        total += new - zeros[last]
        zeros[last] = new
    if last is not None:
        zeros[last] -= total - budget
    return zeros


def _cache_file(cache_dir: Path, baseline_path: Path, layers: list[str], n: int) -> Path:
    key = hashlib.sha256(json.dumps([baseline_path.name, layers, LEVELS, n]).encode())
    return cache_dir / f"{baseline_path.stem}-sensitivity-{key.hexdigest()[:12]}.json"


def cached_curves(model: nn.Module, layers: list[str], x: torch.Tensor, y: torch.Tensor,
                  cache_dir: Path | None, baseline_path: Path | None) -> tuple[float, Curves]:
    """The sensitivity pass, computed once per baseline (and layer set) and kept on disk."""
    path = (_cache_file(cache_dir, baseline_path, layers, len(y))
            if cache_dir is not None and baseline_path is not None else None)
    def compute() -> dict:
        base, curves = sensitivity_curves(model, layers, x, y)
        return {"base": base, "levels": LEVELS, "curves": curves}

    data = paths.cached_json(path, compute, "layer sensitivity")
    return data["base"], data["curves"]


def allocated_config(model: nn.Module, cfg: PruningConfig, val_x: torch.Tensor,
                     val_y: torch.Tensor, cache_dir: Path | None = None,
                     baseline_path: Path | None = None) -> tuple[PruningConfig, dict[str, float]]:
    """`cfg` with per-layer `overrides` from the sensitivity allocation (and those targets);
    `cfg` itself when allocation is uniform."""
    if getattr(cfg, "allocation", "uniform") == "uniform":
        return cfg, {}
    targets = layer_targets(model, cfg)
    layers = list(targets)
    sizes = {n: model.get_submodule(n).weight.numel() for n in layers}
    budget = round(sum(targets[n] * sizes[n] for n in layers))
    base, curves = cached_curves(model, layers, val_x[:VAL_SAMPLES], val_y[:VAL_SAMPLES],
                                 cache_dir, baseline_path)
    zeros = allocate(sizes, curves, base, budget)
    allocated = {n: zeros[n] / sizes[n] for n in layers}
    # exact names (escaped: overrides are fnmatch patterns); a layer at 0 stays dense
    overrides = {glob.escape(n): s for n, s in allocated.items()}
    log.info("sensitivity allocation of %d zeros: %s", budget,
             ", ".join(f"{n} {s:.3f}" for n, s in allocated.items()))
    return replace(cfg, overrides=overrides), allocated
