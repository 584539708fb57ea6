"""Per-layer allocation of a run: sparsity targets from the pruning sensitivity pass and bit
widths from the quantization one, logged as params and written to the artifact allocation.csv."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from torch import nn

from compression import data as data_mod
from compression import tracking
from compression.config.run import RunConfig
from compression.pruning import PruningConfig
from compression.pruning.allocation import allocated_config
from compression.quantization import allocation as bit_allocation
from compression.run.session import Session
from compression.training.baseline import Baseline


def allocate_layers(rc: RunConfig, splits: data_mod.Splits, baseline: Baseline,
                    model: nn.Module, session: Session, out_dir: Path) -> PruningConfig:
    """The pruning config to run: rc.pruning, or with per-layer targets from the sensitivity
    allocation (logged as the param `pruning.allocated` and the artifact allocation.csv)."""
    cfg, targets = allocated_config(model, rc.pruning, splits.val_x, splits.val_y,
                                    rc.paths.cache_dir, baseline.path)
    if targets:
        session.extra_params["pruning.allocated"] = bit_allocation.compact(
            {n: f"{s:.4g}" for n, s in targets.items()}, tracking.MAX_PARAM_LEN)
        for name, target in targets.items():
            session.allocation.setdefault(name, {}).update(
                weights=model.get_submodule(name).weight.numel(),
                target_sparsity=f"{target:.6f}", uniform_sparsity=rc.pruning.sparsity)
    return cfg


def allocate_bits(rc: RunConfig, splits: data_mod.Splits, baseline: Baseline, model: nn.Module,
                  session: Session) -> Any:
    """The quantization config to run: rc.quantization, or with per-layer bit widths from the
    sensitivity pass on the model about to be quantized (logged as the param
    `quantization.allocated` and the `bits` column of allocation.csv)."""
    cfg, bits = bit_allocation.allocated_config(
        model, rc.quantization, splits.val_x, splits.val_y, rc.paths.cache_dir,
        baseline.path.stem)
    if bits:
        session.extra_params["quantization.allocated"] = bit_allocation.compact(
            bits, tracking.MAX_PARAM_LEN)
        for name, b in bits.items():
            session.allocation.setdefault(name, {}).update(
                weights=model.get_submodule(name).weight.numel(), bits=b,
                uniform_bits=getattr(rc.quantization, "bits", ""))
    return cfg


ALLOCATION_COLUMNS = ["layer", "weights", "target_sparsity", "uniform_sparsity", "bits",
                      "uniform_bits"]


def write_allocation_csv(path: Path, rows: dict[str, dict[str, Any]]) -> None:
    """One row per allocated layer: its sparsity and / or bit width against the uniform one
    (blank where that part was not allocated)."""
    if not rows:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(ALLOCATION_COLUMNS)
        for name, row in rows.items():
            w.writerow([name, *(row.get(c, "") for c in ALLOCATION_COLUMNS[1:])])
