"""Per-layer bit widths (mixed precision) under an average-bits budget
(`quantization=lowbit quantization.allocation=sensitivity quantization.budget_bits=3`).

Uniform low-bit quantization gives every layer `bits`. Layers differ, though: a wide first layer
loses little at 2 bits, a small classifier a lot. Here each quantized layer is quantized ALONE to
every width of `bit_choices` (weight-only, the run's granularity, no fine-tuning) and the
validation accuracy and cross-entropy measured: one sensitivity row per layer, cached on disk
(key: a content hash of the model being quantized - after pruning and fine-tuning - and the
layers, widths, grouping and sample count). A greedy pass (AIMET's mixed precision; HAWQ's
cost per bit without the Hessian) then starts every layer at its widest choice and narrows, one
step at a time, the layer whose next step costs the least accuracy per stored bit saved (ties:
the least loss per bit, then the larger saving), until sum(weights x bits) <= budget_bits x
weights; a last pass widens layers again while the budget allows, the most accuracy (then loss)
regained per bit first, so the budget is spent rather than undershot. The greedy runs twice,
ranking steps by accuracy first and by loss first, and the two allocations and uniform (at the
widest choice within the budget, and at the budget's whole width, 2-8) are then scored with all
their layers quantized together (the summed single-layer costs miss how errors compound); the
best is kept (AIMET's second phase checks the joint accuracy the same way).

The budget counts stored bits per weight: the width of the packed codes (32 for a layer left
fp32). The fp16 group scales and the biases come on top and are in `size_bytes`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from fractions import Fraction
from pathlib import Path
from typing import Any

from compression.core import paths
from compression.core.errors import ConfigError
from compression.core.lazy import F, inference_mode, nn, torch
from compression.quantization import lowbit_modules as lbm  # its torch: on first use
from compression.quantization.base import QuantizationConfig
from compression.quantization.lowbit import FP32, LowBitConfig, _targets

log = logging.getLogger(__name__)

VAL_SAMPLES = 1024  # enough to rank layers; keeps the pass to seconds on small models
BATCH = 256

Score = tuple[float, float]  # (top-1 accuracy, mean cross-entropy) on the validation samples
Table = dict[str, dict[int, Score]]  # layer -> bits -> score with only that layer quantized


@inference_mode
def _score(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Score:
    correct, loss = 0, 0.0
    for i in range(0, len(y), BATCH):
        out = model(x[i:i + BATCH])
        correct += int((out.argmax(1) == y[i:i + BATCH]).sum())
        loss += float(F.cross_entropy(out, y[i:i + BATCH], reduction="sum"))
    return correct / len(y), loss / len(y)


@inference_mode
def sensitivity(model: nn.Module, layers: list[str], widths: list[int], group: int | None,
                x: torch.Tensor, y: torch.Tensor) -> tuple[Score, Table]:
    """(fp32 score, per-layer score at each width below 32 with only that layer quantized)."""
    model.eval()
    base = _score(model, x, y)
    table: Table = {name: {bits: joint_score(model, {name: bits}, group, x, y)
                           for bits in widths if bits != FP32} for name in layers}
    return base, table


def _costs(base: Score, scores: dict[int, Score], widths: list[int]) -> list[Score]:
    """(accuracy drop, loss increase) at each width, widest first, made non-decreasing as the
    width shrinks (so noise cannot make fewer bits look free)."""
    out, acc, loss = [], 0.0, 0.0
    for bits in widths:
        if bits != FP32:
            acc = max(acc, base[0] - scores[bits][0])
            loss = max(loss, scores[bits][1] - base[1])
        out.append((acc, loss))
    return out


def allocate_bits(sizes: dict[str, int], base: Score, table: Table, choices: list[int],
                  budget_bits: float, primary: str = "accuracy") -> dict[str, int]:
    """Bits per layer with sum(sizes x bits) <= budget_bits x sum(sizes) (exact integers).
    `primary`: what a step's cost ranks by first, "accuracy" (then loss) or "loss" (then
    accuracy; continuous, where a small validation set ties most accuracy costs at zero)."""
    widths = sorted(set(choices), reverse=True)
    capacity = math.floor(Fraction(str(budget_bits)) * sum(sizes.values()))
    if capacity < widths[-1] * sum(sizes.values()):
        raise ConfigError(f"quantization.budget_bits={budget_bits} is below the smallest of "
                          f"quantization.bit_choices ({widths[-1]}): no allocation fits it")
    costs = {n: _costs(base, table[n], widths) for n in sizes}
    index = dict.fromkeys(sizes, 0)
    total = sum(n * widths[0] for n in sizes.values())

    def step(name: str, i: int, j: int) -> tuple[float, float, int]:
        """Cost per bit of moving `name` from width index i to j; (0, 0, -bits) for free steps."""
        bits = sizes[name] * abs(widths[i] - widths[j])
        (a0, l0), (a1, l1) = costs[name][i], costs[name][j]
        acc, loss = abs(a1 - a0) / bits, abs(l1 - l0) / bits
        return (acc, loss, -bits) if primary == "accuracy" else (loss, acc, -bits)

    while total > capacity:  # narrow the cheapest step
        name = min((n for n in sizes if index[n] + 1 < len(widths)),
                   key=lambda n: step(n, index[n], index[n] + 1))
        total -= sizes[name] * (widths[index[name]] - widths[index[name] + 1])
        index[name] += 1
    while True:  # widen where it regains the most per bit and still fits
        fits = [n for n in sizes if index[n] > 0 and total + sizes[n] * (
            widths[index[n] - 1] - widths[index[n]]) <= capacity
            and step(n, index[n], index[n] - 1)[:2] > (0.0, 0.0)]
        if not fits:
            break
        name = max(fits, key=lambda n: step(n, index[n], index[n] - 1)[:2])
        total += sizes[name] * (widths[index[name] - 1] - widths[index[name]])
        index[name] -= 1
    return {n: widths[i] for n, i in index.items()}


@inference_mode
def joint_score(model: nn.Module, bits: dict[str, int], group: int | None, x: torch.Tensor,
                y: torch.Tensor) -> Score:
    """The score with every layer of `bits` quantized at its width at once (weights restored)."""
    originals = {n: model.get_submodule(n).weight.detach().clone() for n in bits}
    try:
        for name, b in bits.items():
            if b == FP32:
                continue
            w = originals[name]
            g = lbm.group_len(w.shape, group)
            q, scales = lbm.quantize_weight(w, b, g)
            model.get_submodule(name).weight.copy_(lbm.dequantize_weight(q, scales, w.shape, g))
        return _score(model.eval(), x, y)
    finally:
        for name, w in originals.items():
            model.get_submodule(name).weight.copy_(w)


def best_joint(model: nn.Module, candidates: dict[str, dict[str, int]], sizes: dict[str, int],
               group: int | None, x: torch.Tensor, y: torch.Tensor) -> str:
    """The candidate allocation scoring best with all its layers quantized together (accuracy,
    then loss, then fewer bits): single-layer costs added up miss how errors compound (LeNet-5
    on digits: the accuracy-ranked greedy alone scored 1.1-1.7 pt under uniform)."""
    def rank(name: str) -> tuple[float, float, int]:
        acc, loss = joint_score(model, candidates[name], group, x, y)
        return -acc, loss, sum(sizes[n] * b for n, b in candidates[name].items())

    ranks = {name: rank(name) for name in candidates}
    log.info("mixed precision, joint validation score per candidate: %s", ", ".join(
        f"{n} acc {-r[0]:.4f} loss {r[1]:.4f}" for n, r in ranks.items()))
    return min(ranks, key=ranks.__getitem__)


def _content_key(model: nn.Module, parts: list[Any]) -> str:
    h = hashlib.sha256(json.dumps(parts).encode())
    for key, value in model.state_dict().items():
        if isinstance(value, torch.Tensor):
            h.update(key.encode())
            h.update(value.detach().cpu().contiguous().flatten().view(torch.uint8).numpy())
    return h.hexdigest()[:16]


def cached_sensitivity(model: nn.Module, layers: list[str], cfg: LowBitConfig, x: torch.Tensor,
                       y: torch.Tensor, cache_dir: Path | None, prefix: str = "model"
                       ) -> tuple[Score, Table]:
    """The sensitivity pass, computed once per model content (and settings) and kept on disk."""
    widths = sorted(cfg.bit_choices, reverse=True)
    path = None
    if cache_dir is not None:
        key = _content_key(model, [layers, widths, cfg.group, len(y), VAL_SAMPLES])
        path = cache_dir / f"{prefix}-bits-sensitivity-{key}.json"
    def compute() -> dict:
        base, table = sensitivity(model, layers, widths, cfg.group, x, y)
        return {"base": base, "widths": widths, "layers": table}

    data = paths.cached_json(path, compute, "bit-width sensitivity")
    table = {n: {int(b): (s[0], s[1]) for b, s in row.items()}  # JSON keys are strings
             for n, row in data["layers"].items()}
    return (data["base"][0], data["base"][1]), table


def allocated_config(model: nn.Module, cfg: QuantizationConfig, val_x: torch.Tensor,
                     val_y: torch.Tensor, cache_dir: Path | None = None,
                     prefix: str = "model") -> tuple[QuantizationConfig, dict[str, int]]:
    """`cfg` with `layer_bits` from the sensitivity allocation (and those bits); `cfg` itself
    when the mode has no allocation or it is uniform."""
    if getattr(cfg, "allocation", "uniform") == "uniform":
        return cfg, {}
    assert isinstance(cfg, LowBitConfig)
    layers = list(_targets(model, cfg))
    sizes = {n: model.get_submodule(n).weight.numel() for n in layers}
    base, table = cached_sensitivity(model, layers, cfg, val_x[:VAL_SAMPLES],
                                     val_y[:VAL_SAMPLES], cache_dir, prefix)
    x, y = val_x[:VAL_SAMPLES], val_y[:VAL_SAMPLES]
    candidates = {f"greedy by {p}": allocate_bits(sizes, base, table, cfg.bit_choices,
                                                  cfg.budget_bits, p)
                  for p in ("accuracy", "loss")}
    # uniform at the widest choice within the budget, and at the budget's own whole width
    # when lowbit has it (3 bits within budget 3 though bit_choices skip it)
    fitting = [b for b in cfg.bit_choices if b <= cfg.budget_bits]
    whole = math.floor(cfg.budget_bits)
    for width in sorted({max(fitting), *([whole] if 2 <= whole <= 8 else [])}):
        candidates[f"uniform {width}"] = dict.fromkeys(sizes, width)
    bits = candidates[best_joint(model, candidates, sizes, cfg.group, x, y)]
    average = sum(sizes[n] * b for n, b in bits.items()) / sum(sizes.values())
    log.info("mixed precision within %g bits per weight (%.4g used): %s", cfg.budget_bits,
             average, ", ".join(f"{n} {b}" for n, b in bits.items()))
    return dataclasses.replace(cfg, layer_bits=bits), bits


def compact(items: dict[str, Any], limit: int) -> str:
    """`fc1:4,fc2:8,...` cut at a whole entry so it fits `limit` characters (MLflow's param
    length), with `,...(+N)` saying how many entries the full list (the CSV) has beyond it."""
    parts = [f"{n}:{b}" for n, b in items.items()]
    out = ",".join(parts)
    if len(out) <= limit:
        return out
    kept: list[str] = []
    for part in parts:
        tail = f",...(+{len(parts) - len(kept) - 1})"
        if len(",".join([*kept, part])) + len(tail) > limit:
            break
        kept.append(part)
    return ",".join(kept) + f",...(+{len(parts) - len(kept)})"
