"""`data=npz`: a NumPy .npz file with x_train, y_train and optionally x_val, y_val, x_test, y_test.

Images as (N, C, H, W), (N, H, W) or (N, H, W, C); tables as (N, features).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from compression.core.errors import first_line
from compression.core.lazy import np
from compression.data.config import DataConfig, Raw
from compression.data.registry import register_dataset
from compression.data.splits import as_arrays
from compression.data.streaming import DataError


def existing(path: str | None, what: str, name: str) -> Path:
    """`data.root` as an existing path, or a one-line DataError."""
    if not path:
        raise DataError(f"data={name} needs data.root=<path to the {what}>")
    p = Path(str(path)).expanduser()
    if not p.exists():
        raise DataError(f"data.root={path}: no such {what}")
    return p


@register_dataset("npz")
def load_npz(cfg: DataConfig) -> Raw:
    path = existing(cfg.root, "file", cfg.name)
    try:
        # allow_pickle=False: an object array would run code named by the file
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(f"data.root={path} is not a readable .npz file: {first_line(e)}") from None
    if "x_train" not in arrays or "y_train" not in arrays:
        raise DataError(f"data.root={path} holds {', '.join(sorted(arrays)) or 'nothing'}; "
                        "data=npz needs x_train and y_train (optionally x_val, y_val, x_test, "
                        "y_test)")

    def pair(split: str) -> tuple[np.ndarray, np.ndarray] | None:
        x, y = arrays.get(f"x_{split}"), arrays.get(f"y_{split}")
        if x is None and y is None:
            return None
        if x is None or y is None:
            raise DataError(f"data.root={path}: x_{split} and y_{split} come together; only "
                            f"{'x' if y is None else 'y'}_{split} is there")
        return as_arrays(x, y, f"{path.name} {split} split")

    return Raw(pair("train"), pair("val"), pair("test"), source=str(path.resolve()))  # type: ignore[arg-type]
