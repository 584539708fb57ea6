"""The built-in datasets: scikit-learn's 8x8 digits and Fashion-MNIST from IDX files."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

from compression.core.errors import DatasetNotFoundError
from compression.core.lazy import np
from compression.data.config import DataConfig, Raw
from compression.data.registry import register_dataset

FASHION_MNIST_DEBIAN_ROOT = "/usr/share/datasets/fashion-mnist"


def _digits_file() -> Path | None:
    """scikit-learn's bundled copy of the UCI digits (a gzipped CSV: 64 pixels, then the
    label), found without importing scikit-learn, whose import costs about 1 s per process
    (the sweep's and each parallel worker's)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    return path if path.is_file() else None


@register_dataset("digits")
def _load_digits(cfg: DataConfig) -> Raw:
    path = _digits_file()
    if path is not None:
        table = np.loadtxt(path, delimiter=",", dtype=np.float32)
        images, target = table[:, :-1].reshape(-1, 8, 8), table[:, -1]
    else:  # another layout of the package: its public loader
        from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

        d = load_digits()
        images, target = d.images, d.target
    x = (images.astype(np.float32) / 16.0)[:, None, :, :]  # (1797, 1, 8, 8) in [0, 1]
    return Raw((x, target.astype(np.int64)), source=str(path or "sklearn.datasets.load_digits"))


def _find_idx(root: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (root / name).is_file():
            return root / name
    return None


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) as used by MNIST and Fashion-MNIST."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} but holds {data.size} bytes")
    return data.reshape(dims)


@register_dataset("fashion_mnist")
def _load_fashion(cfg: DataConfig) -> Raw:
    root = Path(cfg.root or FASHION_MNIST_DEBIAN_ROOT)
    stems = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    paths = [_find_idx(root, s) for s in stems]
    if any(p is None for p in paths):
        missing = [s for s, p in zip(stems, paths, strict=True) if p is None]
        raise DatasetNotFoundError(
            f"data.name=fashion_mnist: {', '.join(missing)}[.gz] not found in {root}; "
            "install them with `apt-get install dataset-fashion-mnist` or set data.root to a "
            "folder of (Fashion-)MNIST IDX files"
        )
    tx, ty, ex, ey = (read_idx(p) for p in paths)  # type: ignore[arg-type]
    to_float = lambda a: (a.astype(np.float32) / 255.0)[:, None, :, :]  # noqa: E731
    return Raw((to_float(tx), ty.astype(np.int64)), test=(to_float(ex), ey.astype(np.int64)),
               source=str(root))


