"""Plain text as byte sequences (`data=text`): any file or folder, split by position.

The corpus (a file, or every file under a folder in sorted path order, concatenated) is cut
into three contiguous blocks - train, then val, then test (`val_fraction`, `test_fraction` of
the bytes) - never shuffled character by character, so no sentence straddles two splits and
val/test measure text the model never saw. Each block is cut into windows of `data.context`
bytes: x = bytes i..i+T-1 (as float values 0..255, what the data pipeline carries), y = bytes
i+1..i+T (the next byte at every position), windows not overlapping.

Default corpus: /usr/share/common-licenses, the licence texts of Debian's `base-files` (an
Essential package: present on every Debian and Ubuntu system, the python:3 images included;
about 280 kB of English). Where it is missing, the project's own docs/*.md stand in (shipped in
the repository, so the default works offline anywhere); the run's `data.source` says which.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from compression.core.errors import DatasetNotFoundError
from compression.core.lazy import np
from compression.core.paths import PROJECT_ROOT
from compression.data.config import DataConfig, Raw
from compression.data.registry import register_dataset
from compression.data.streaming import DataError

VOCAB = 256  # bytes: every file is valid input, no tokenizer to ship or fit
DEFAULT_CORPUS = Path("/usr/share/common-licenses")
FALLBACK_CORPUS = PROJECT_ROOT / "docs"  # the project's own docs/*.md


def corpus_files(root: Path) -> list[Path]:
    """A file, or the files under a folder in sorted path order (hidden ones skipped; a file
    reached through two links read once)."""
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise DatasetNotFoundError(f"data.name=text: data.root={str(root)!r} is neither a file "
                                   "nor a folder")
    seen, out = set(), []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).parts
        if p.is_file() and not any(part.startswith(".") for part in rel):
            real = p.resolve()
            if real not in seen:
                seen.add(real)
                out.append(p)
    return out


def default_root() -> Path:
    """Debian's licence texts when present, else the project's docs (see the module doc)."""
    return DEFAULT_CORPUS if corpus_files_or_none(DEFAULT_CORPUS) else FALLBACK_CORPUS


def corpus_files_or_none(root: Path) -> list[Path] | None:
    try:
        return corpus_files(root) or None
    except DatasetNotFoundError:
        return None


def read_corpus(cfg: DataConfig) -> tuple[bytes, str]:
    """The corpus bytes and where they came from."""
    from compression.core.paths import resolve

    root = resolve(cfg.root) if cfg.root else default_root()
    files = corpus_files(root)
    if root == FALLBACK_CORPUS:
        files = [f for f in files if f.suffix == ".md"]
    if not files:
        raise DatasetNotFoundError(f"data.name=text: no files under {root}")
    return b"".join(f.read_bytes() for f in files), str(root)


def windows(block: np.ndarray, context: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of shape (N, T): N = (len - 1) // T non-overlapping windows, y shifted by one."""
    n = (len(block) - 1) // context
    x = block[: n * context].reshape(n, context).astype(np.float32)
    y = block[1 : n * context + 1].reshape(n, context).astype(np.int64)
    return x, y


def split_by_position(data: np.ndarray, cfg: DataConfig) -> dict[str, np.ndarray]:
    """Three contiguous blocks: train (first), val, test (last)."""
    n_val, n_test = round(cfg.val_fraction * len(data)), round(cfg.test_fraction * len(data))
    n_train = len(data) - n_val - n_test
    return {"train": data[:n_train], "val": data[n_train : n_train + n_val],
            "test": data[n_train + n_val :]}


@register_dataset("text")
def _load_text(cfg: DataConfig) -> Raw:
    raw, source = read_corpus(cfg)
    data = np.frombuffer(raw, dtype=np.uint8)
    blocks = split_by_position(data, cfg)
    pairs = {}
    for name, block in blocks.items():
        if len(block) < cfg.context + 1:
            raise DataError(f"data text: the {name} block holds {len(block)} bytes, fewer than "
                            f"one window of data.context={cfg.context} + 1 ({source}, "
                            f"{len(data)} bytes in all); lower data.context or give more text")
        pairs[name] = windows(block, cfg.context)
    digest = hashlib.sha256(raw).hexdigest()[:16] + f"-t{cfg.context}"
    return Raw(pairs["train"], pairs["val"], pairs["test"], source=source, num_classes=VOCAB,
               digest=digest, sequence=True)
