"""`data=csv`: a table of numeric feature columns and one label column (`data.label`).

`data.root` is one CSV file (val / test carved from it), or a folder holding train.csv and
optionally val.csv / test.csv. Labels may be integers 0..C-1 or names (sorted, then numbered).
"""

from __future__ import annotations

from pathlib import Path

from compression.core.errors import first_line
from compression.core.lazy import np
from compression.data.config import DataConfig, Raw
from compression.data.npz import existing
from compression.data.registry import register_dataset
from compression.data.splits import as_arrays
from compression.data.streaming import DataError


def _read(path: Path, label: str) -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd  # only here: pandas costs ~0.3 s to import

    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise DataError(f"{path} is not a readable CSV file: {first_line(e)}") from None
    if label not in frame.columns:
        cols = ", ".join(map(str, frame.columns[:8]))
        raise DataError(f"{path} has no label column {label!r} (columns: {cols}); "
                        "set data.label=<column>")
    features = frame.drop(columns=[label])
    text = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if text:
        raise DataError(f"{path}: column {text[0]!r} is not numeric; data=csv takes numeric "
                        "features only")
    return features.to_numpy(np.float32), frame[label].to_numpy()


def _numbered(labels: list[np.ndarray]) -> list[np.ndarray]:
    """Names become 0..C-1 in sorted order, the same numbering in every split."""
    if all(np.issubdtype(y.dtype, np.number) for y in labels):
        return labels
    names = sorted({str(v) for y in labels for v in y})
    index = {n: i for i, n in enumerate(names)}
    return [np.array([index[str(v)] for v in y], dtype=np.int64) for y in labels]


@register_dataset("csv")
def load_csv(cfg: DataConfig) -> Raw:
    root = existing(cfg.root, "file or folder", cfg.name)
    files = {"train": root} if root.is_file() else {
        s: root / f"{s}.csv" for s in ("train", "val", "test") if (root / f"{s}.csv").is_file()}
    if "train" not in files:
        raise DataError(f"data.root={root} is a folder without train.csv")
    tables = {s: _read(p, cfg.label) for s, p in files.items()}
    labels = _numbered([y for _, y in tables.values()])
    pairs = {s: as_arrays(x, y, f"{files[s].name}")
             for (s, (x, _)), y in zip(tables.items(), labels, strict=True)}
    return Raw(pairs["train"], pairs.get("val"), pairs.get("test"), source=str(root.resolve()))
