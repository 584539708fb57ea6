"""Columns every analysis needs, derived once from the raw run table.

The pipeline logs `accuracy_drop` and `compression_ratio` against each run's *own* dense baseline.
For a small-dense run (pruning.method=none, model.width<1) that baseline is the small model
itself, so both would read 0 and 1x. Comparisons need the full-width dense model as the common
reference, so `derive` recomputes them against it (same model, data and seed; any seed when that
one is missing) and keeps the logged values as `logged_accuracy_drop` / `logged_compression_ratio`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from compression.analysis import runtimes
from compression.training import quality

DENSE, SMALL_DENSE = "dense baseline", "small dense"
SEED_KEYS = ("seed",)  # what varies between repeats of one configuration
MAX_SPLITS = 8  # more distinct labels than this within a method: label by quantization only
PARAM_DEFAULTS = {"pruning.method": "none", "quantization.mode": "none", "model.width": 1.0,
                  "model.name": "model", "data.name": "data", "seed": 0,
                  "pruning.sparsity": 0.0, "pruning.include": "['*']"}


def param_columns(frame: pd.DataFrame) -> list[str]:
    """Config params: dotted names (tags excluded) plus the top-level `seed` / `objectives`.
    Not the allocations a run computed (`pruning.allocated`, `quantization.allocated`): they are
    results, and differ between seeds of one configuration."""
    return [c for c in frame.columns
            if (("." in c and not c.startswith("tags.") and not c.endswith(".allocated"))
                or c in ("seed", "objectives"))]


def _fill_defaults(frame: pd.DataFrame) -> pd.DataFrame:
    for col, value in PARAM_DEFAULTS.items():
        if col not in frame:
            frame[col] = value
        frame[col] = frame[col].fillna(value)
    return frame


def role(frame: pd.DataFrame) -> pd.Series:
    """`dense baseline` (method none, width 1, no quantization), `small dense` (method none,
    width < 1) or `compressed` (everything else)."""
    dense = frame["pruning.method"].eq("none")
    out = pd.Series("compressed", index=frame.index)
    out[dense & frame["model.width"].eq(1) & frame["quantization.mode"].eq("none")] = DENSE
    out[dense & frame["model.width"].lt(1)] = SMALL_DENSE
    return out


def _reference(frame: pd.DataFrame) -> pd.DataFrame:
    """Full-width dense accuracy, file bytes and prunable-weight count per (model, data, seed)."""
    full = frame[frame["model.width"].eq(1)]
    cols = {"ref_accuracy": ("baseline_accuracy", "mean"),
            "ref_val_accuracy": ("baseline_val_accuracy", "mean"),
            "ref_size_bytes": ("dense_size_bytes", "mean"),
            "ref_params": ("params", "max")}
    cols = {k: v for k, v in cols.items() if v[0] in full}
    keys = ["model.name", "data.name"]
    exact = full.groupby([*keys, "seed"]).agg(**cols).reset_index()
    loose = full.groupby(keys).agg(**cols).reset_index()
    out = frame[[*keys, "seed"]].merge(exact, on=[*keys, "seed"], how="left")
    fallback = frame[keys].merge(loose, on=keys, how="left")
    for col in cols:
        out[col] = out[col].fillna(fallback[col])
    out.index = frame.index
    return out.drop(columns=[*keys, "seed"])


def _recompute_against_reference(frame: pd.DataFrame) -> pd.DataFrame:
    ref = _reference(frame)
    for col in ("ref_accuracy", "ref_val_accuracy", "ref_size_bytes", "ref_params"):
        frame[col] = ref.get(col, np.nan)
    full = frame["model.width"].eq(1)
    for split in ("", "val_"):  # test and validation drops alike
        if f"{split}accuracy_drop" in frame and f"{split}accuracy" in frame:
            frame[f"logged_{split}accuracy_drop"] = frame[f"{split}accuracy_drop"]
            # signed: positive is quality lost, also for lower-is-better metrics (perplexity)
            drop = quality.loss_sign(frame) * (frame[f"ref_{split}accuracy"]
                                               - frame[f"{split}accuracy"])
            frame[f"{split}accuracy_drop"] = frame[f"{split}accuracy_drop"].where(
                full | drop.isna(), drop)
    if "compression_ratio" in frame and "size_bytes" in frame:
        frame["logged_compression_ratio"] = frame["compression_ratio"]
        ratio = frame["ref_size_bytes"] / frame["size_bytes"]
        frame["compression_ratio"] = frame["compression_ratio"].where(full | ratio.isna(), ratio)
    if "sparsity" in frame:
        # Where a small model sits on a sparsity axis: the share of the full model it lacks.
        # Biases count in params, so this is a (tiny) overestimate of removed weights.
        missing = 1 - frame.get("nonzero_params", frame.get("params")) / frame["ref_params"]
        small = frame["role"].eq(SMALL_DENSE) & missing.notna()
        frame["equivalent_sparsity"] = frame["sparsity"].where(~small, missing)
    return frame


def _label(key: str, value: object) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value in ("None",):
        return ""  # a param this run's mode does not have (bits of an fp16 run, ...)
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # numeric params come back as floats: bits=4, not 4.0
    if key == "quantization.mode":
        return "" if value == "none" else f"+ {value}"
    return f"{key.rsplit('.', 1)[-1]}={str(value).replace(chr(39), '')}"


def series_labels(frame: pd.DataFrame) -> pd.Series:
    """One curve per method, split by whatever else varies among its runs (quantization mode,
    included layers, ...), but not by the curve's own x (sparsity, width) or the seed."""
    method = frame["pruning.method"].where(frame["pruning.method"].ne("none"), "dense")
    base = frame["role"].where(frame["role"].ne("compressed"), method)
    params = param_columns(frame)
    labels = pd.Series("", index=frame.index)
    for name, group in frame.groupby(base):
        skip = {"pruning.sparsity", *SEED_KEYS}
        if name in (DENSE, SMALL_DENSE, "dense"):
            skip.add("model.width")
        # A param splits the series when it varies among runs of one quantization mode: the
        # mode's own params (backend, engine, granularity, ...) differ from mode to mode, or
        # are missing, and the mode already tells those series apart.
        modes = group["quantization.mode"].astype(str)
        varying = [c for c in params if c not in skip and (
            (c == "quantization.mode" and modes.nunique() > 1)
            or (group[c].astype(str).where(group[c].notna()).groupby(modes).nunique() > 1).any())]
        parts = group[varying].astype(object).apply(
            lambda r, v=varying: " ".join(p for p in (_label(k, r[k]) for k in v) if p), axis=1)
        if parts.nunique() > MAX_SPLITS and "quantization.mode" in varying:
            # the quantization settings that vary (mode, bits, ...), not every other param
            quant = [c for c in varying if c.startswith("quantization.")]
            parts = group[quant].astype(object).apply(
                lambda r, v=quant: " ".join(p for p in (_label(k, r[k]) for k in v) if p),
                axis=1)
        elif parts.nunique() > MAX_SPLITS:
            parts = pd.Series("", index=group.index)
        labels[group.index] = (str(name) + " " + parts).str.strip() if varying else str(name)
    return labels


def single_layer(include: object) -> str | None:
    """The layer a sensitivity run prunes alone: include is one pattern naming one layer."""
    text = str(include).strip("[]").replace("'", "").replace('"', "").strip()
    if not text or "," in text or any(ch in text for ch in "*?["):
        return None
    return text


def describe(row: pd.Series) -> str:
    """A short configuration label for one run, e.g. `mlp unstructured@0.9 + dynamic_int8`."""
    method = row.get("pruning.method", "none")
    width = row.get("model.width", 1.0)
    sparsity = row.get("pruning.sparsity", 0)
    try:
        sparsity = f"{float(sparsity):.4g}"
    except (TypeError, ValueError):  # a param logged as text (e.g. "None")
        sparsity = str(sparsity)
    text = "dense" if method == "none" else f"{method}@{sparsity}"
    if width != 1:
        text += f" x{width:g}"
    include = str(row.get("pruning.include", "['*']"))
    if method != "none" and include not in ("['*']", "*"):
        text += f" {include.replace(chr(39), '')}"
    if str(row.get("pruning.sparse_kernel", False)) == "True":  # MLflow params are strings
        text += " sparse-kernel"
    quant = row.get("quantization.mode", "none")
    if quant != "none":
        text += f" + {quant}"
        # From the logged params alone (runs of any version, modes from plug-ins): a mode with
        # a width shows it, a per-layer allocation its budget, as QuantizationConfig.label does
        bits = str(row.get("quantization.bits", "")).removesuffix(".0")
        if row.get("quantization.allocation") == "sensitivity":
            budget = str(row.get("quantization.budget_bits", "")).removesuffix(".0")
            text += f" mixed<={budget}-bit"
        elif bits not in ("", "None", "nan"):
            text += " ternary" if bits == "ternary" else f" {bits}-bit"
    return f"{row.get('model.name', 'model')} {text}"


def config_key(frame: pd.DataFrame) -> pd.Series:
    """Runs that differ only by seed share a key (their mean and spread form one curve point)."""
    cols = [c for c in param_columns(frame) if c not in SEED_KEYS]
    if not cols:
        return pd.Series(frame.index.astype(str), index=frame.index)
    return frame[cols].apply(lambda r: "|".join(map(str, r)), axis=1)


def relative_latency(frame: pd.DataFrame) -> pd.Series:
    """Batch-1 latency over the run's own baseline latency, both timed interleaved in one
    process (1 / speedup). Raw `latency_ms` of different runs come from different moments on a
    possibly shared machine; this ratio is what can be compared across runs."""
    if "speedup" in frame:
        return 1.0 / frame["speedup"].where(frame["speedup"] > 0)
    return pd.Series(np.nan, index=frame.index)


def derive(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of `frame` with role, series, config_key, label and reference-based columns."""
    frame = _fill_defaults(frame.copy())
    frame["relative_latency"] = relative_latency(frame)
    frame["role"] = role(frame)
    frame = _recompute_against_reference(frame)
    frame["series"] = series_labels(frame)
    pruned = frame["pruning.method"].ne("none")
    frame["single_layer"] = frame["pruning.include"].map(single_layer).where(pruned)
    frame["config_key"] = config_key(frame)
    frame["label"] = frame.apply(describe, axis=1) if len(frame) else pd.Series(dtype=str)
    return runtimes.add_columns(frame)
