"""`data=image_folder`: one subfolder per class of PNG / JPEG files, read with Pillow.

Layouts: `root/<class>/*.png` (val and test carved from it), or `root/train/<class>/...` with
optional `root/val/` and `root/test/` holding the same class names. Every image is converted to
`data.channels` (1: grayscale, 3: RGB) and resized to `data.image_size` (both default to the
first image's). Small folders are decoded once into memory; a folder whose decoded size exceeds
`data.max_memory_mb` (or `data.stream=true`) streams from disk through a DataLoader.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from compression.core.errors import first_line
from compression.core.lazy import np, torch
from compression.data.config import DataConfig, Raw
from compression.data.npz import existing
from compression.data.registry import register_dataset
from compression.data.streaming import DataError, Lazy, worker_errors

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

EXTENSIONS = {".png", ".jpg", ".jpeg"}
SPLITS = ("train", "val", "test")


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() in EXTENSIONS and not p.name.startswith(".") and p.is_file())


def _class_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan(folder: Path, classes: list[str] | None = None) -> tuple[list[Path], np.ndarray,
                                                                  list[str]]:
    """Files and labels of one split; `classes` (train's) fixes the numbering of val / test."""
    found = _class_folders(folder)
    if not found:
        raise DataError(f"data.root: {folder} holds no class folders (expected "
                        f"{folder}/<class>/*.png)")
    names = [p.name for p in found]
    if classes is not None:
        extra = sorted(set(names) - set(classes))
        if extra:
            raise DataError(f"data.root: {folder} has class folder {extra[0]!r}, which the "
                            "train split does not have")
    classes = classes or names
    files: list[Path] = []
    labels: list[int] = []
    for cls_dir in found:
        images = _images(cls_dir)
        if not images:
            raise DataError(f"data.root: class folder {cls_dir} holds no PNG or JPEG images")
        files += images
        labels += [classes.index(cls_dir.name)] * len(images)
    return files, np.array(labels, dtype=np.int64), classes


class ImageFiles:  # a map-style Dataset (no base class: torch is imported on use)
    """Decoded on demand: (float32 (C, H, W) in [0, 1], label)."""

    def __init__(self, files: list[Path], labels: np.ndarray, size: tuple[int, int],
                 channels: int) -> None:
        self.files, self.labels, self.size, self.channels = files, labels, size, channels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return decode(self.files[i], self.size, self.channels), int(self.labels[i])


def decode(path: Path, size: tuple[int, int], channels: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            if img.size != size:
                img = img.resize(size, Image.Resampling.BILINEAR)
            a = np.asarray(img, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DataError(f"data.root: corrupt or unreadable image {path}: {first_line(e)}"
                        ) from None
    return a[None] if a.ndim == 2 else np.ascontiguousarray(a.transpose(2, 0, 1))


def _geometry(cfg: DataConfig, first: Path) -> tuple[tuple[int, int], int]:
    from PIL import Image

    try:
        with Image.open(first) as img:
            w, h = img.size
            mode = img.mode
    except OSError as e:
        raise DataError(f"data.root: corrupt or unreadable image {first}: {first_line(e)}"
                        ) from None
    size = (cfg.image_size, cfg.image_size) if cfg.image_size else (w, h)
    channels = cfg.channels or (1 if mode in ("1", "L", "LA", "I", "I;16", "F") else 3)
    return size, channels


class _Checked:  # a map-style Dataset
    """Each file's content hash, after a full decode (a corrupt file fails here, named)."""

    def __init__(self, images: ImageFiles) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> str:
        self.images[i]
        return hashlib.sha256(self.images.files[i].read_bytes()).hexdigest()


def check_and_digest(images: ImageFiles, root: Path, num_workers: int) -> str:
    """One pass over every file before training: decodable, and hashed for the digest."""
    h = hashlib.sha256()
    loader = torch.utils.data.DataLoader(_Checked(images), batch_size=64, num_workers=num_workers,
                        collate_fn=list)
    with worker_errors():
        for batch in loader:
            for file_hash in batch:
                h.update(file_hash.encode())
    h.update(repr([str(p.relative_to(root)) for p in images.files]).encode())
    return h.hexdigest()[:16]


def _in_memory(images: ImageFiles, num_workers: int) -> np.ndarray:
    out = np.empty((len(images), images.channels, images.size[1], images.size[0]), np.float32)
    loader = torch.utils.data.DataLoader(images, batch_size=256, num_workers=num_workers)
    start = 0
    with worker_errors():
        for xb, _ in loader:
            out[start : start + len(xb)] = xb.numpy()
            start += len(xb)
    return out


@register_dataset("image_folder")
def load_image_folder(cfg: DataConfig) -> Raw:
    root = existing(cfg.root, "folder", cfg.name)
    if not root.is_dir():
        raise DataError(f"data.root={root} is not a folder")
    layered = (root / "train").is_dir() and any(_class_folders(root / "train"))
    tops = {s: root / s for s in SPLITS if (root / s).is_dir()} if layered else {"train": root}
    files, labels, classes = scan(tops["train"])
    scanned = {"train": (files, labels)}
    for split in ("val", "test"):
        if split in tops:
            f, y, _ = scan(tops[split], classes)
            scanned[split] = (f, y)
    size, channels = _geometry(cfg, files[0])
    n = sum(len(f) for f, _ in scanned.values())
    decoded_mb = n * channels * size[0] * size[1] * 4 / 2**20
    stream = cfg.stream if cfg.stream is not None else decoded_mb > cfg.max_memory_mb
    log.info("image folder %s: %d images, %d classes, %dx%dx%d, %.0f MB decoded: %s", root, n,
             len(classes), channels, size[1], size[0], decoded_mb,
             "streamed from disk" if stream else "held in memory")
    sets = {s: ImageFiles(f, y, size, channels) for s, (f, y) in scanned.items()}
    if stream:
        digest = "".join(check_and_digest(d, root, cfg.num_workers) for d in sets.values())
        pairs = {s: (Lazy(d, np.arange(len(d)), num_workers=cfg.num_workers, where=s), d.labels)
                 for s, d in sets.items()}
        digest = hashlib.sha256(digest.encode()).hexdigest()[:16]
    else:
        pairs = {s: (_in_memory(d, cfg.num_workers), d.labels) for s, d in sets.items()}
        digest = None  # hashed from the decoded arrays
    return Raw(pairs["train"], pairs.get("val"), pairs.get("test"), source=str(root.resolve()),
               num_classes=len(classes), digest=digest)
