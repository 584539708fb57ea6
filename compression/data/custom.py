"""`data=custom`: `data._target_` names the user's factory; its other keys are its arguments.

The factory returns the splits as a dict {"train": ..., "val": ..., "test": ...} or a tuple
(train, val, test) with val / test optional (None); each split is an (x, y) pair of arrays or
tensors, or a `torch.utils.data.Dataset` of (x, label) items. A Dataset whose decoded size fits
`data.max_memory_mb` is read once into memory; a larger one streams through a DataLoader.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from compression.core.errors import ConfigError, first_line
from compression.core.lazy import np, torch
from compression.data.config import DataConfig, Pair, Raw
from compression.data.registry import register_dataset
from compression.data.splits import as_arrays
from compression.data.streaming import DataError, Lazy, as_example

if TYPE_CHECKING:
    from torch.utils.data import Dataset

SPLITS = ("train", "val", "test")


def _factory(cfg: DataConfig) -> Any:
    from hydra.utils import get_method

    if cfg.target is None:
        raise DataError("data=custom needs data._target_=<module.factory> returning the splits")
    try:
        return get_method(str(cfg.target))
    except Exception as e:  # hydra wraps import errors; keep the message to one line
        raise ConfigError(f"data._target_={cfg.target!r} cannot be imported: {first_line(e)}"
                          ) from None


def _by_split(out: Any, where: str) -> dict[str, Any]:
    if isinstance(out, Mapping):
        unknown = sorted(set(out) - set(SPLITS))
        if unknown or "train" not in out:
            raise DataError(f"{where} returned keys {sorted(out)}; expected train and "
                            "optionally val, test")
        return {k: out[k] for k in SPLITS if out.get(k) is not None}
    if isinstance(out, Sequence) and not isinstance(out, str) and 1 <= len(out) <= 3:
        return {k: v for k, v in zip(SPLITS, out, strict=False) if v is not None}
    raise DataError(f"{where} returned {type(out).__name__}; expected (train, val, test) or a "
                    "dict of splits, each an (x, y) pair or a Dataset")


def _from_dataset(ds: Dataset, cfg: DataConfig, where: str) -> Pair:
    try:
        n = len(ds)  # type: ignore[arg-type]
    except TypeError:
        raise DataError(f"{where} is a Dataset without len(); give a map-style Dataset"
                        ) from None
    if n == 0:
        raise DataError(f"{where} is empty")
    first, _ = as_example(ds[0], where)
    stream = cfg.stream if cfg.stream is not None else (
        n * first.size * 4 / 2**20 > cfg.max_memory_mb)
    targets = getattr(ds, "targets", None)  # torchvision-style: labels without decoding
    if stream and targets is not None and len(targets) == n:
        return Lazy(ds, np.arange(n), num_workers=cfg.num_workers, where=where), np.asarray(
            targets, dtype=np.int64)
    items = [as_example(ds[i], where) for i in range(n)]
    shapes = {x.shape for x, _ in items}
    if len(shapes) > 1:
        raise DataError(f"{where}: items of different shapes {sorted(shapes)[:2]}")
    x, y = np.stack([x for x, _ in items]), np.array([y for _, y in items])
    if stream:  # labels known now: keep the inputs on disk all the same
        return Lazy(ds, np.arange(n), num_workers=cfg.num_workers, where=where), y
    return as_arrays(x, y, where)


def _split(value: Any, cfg: DataConfig, where: str) -> Pair:
    if isinstance(value, torch.utils.data.Dataset):
        return _from_dataset(value, cfg, where)
    if isinstance(value, Sequence) and len(value) == 2:
        return as_arrays(value[0], value[1], where)
    raise DataError(f"{where} is {type(value).__name__}; expected an (x, y) pair or a Dataset")


def _dataset_digest(pair: Pair) -> str:
    x, y = pair
    if not isinstance(x, Lazy):
        return ""
    h = hashlib.sha256(np.ascontiguousarray(y).data)
    for i in range(len(x)):  # a streamed Dataset: hash every example as it is read
        h.update(np.ascontiguousarray(as_example(x.dataset[int(x.indices[i])], x.where)[0]).data)
    return h.hexdigest()[:16]


@register_dataset("custom")
def load_custom(cfg: DataConfig) -> Raw:
    where = f"data._target_={cfg.target}"
    factory = _factory(cfg)
    try:
        out = factory(**cfg.kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where} with {cfg.kwargs} cannot build the data: "
                          f"{type(e).__name__}: {first_line(e)}") from None
    splits = {k: _split(v, cfg, f"{where} {k} split") for k, v in _by_split(out, where).items()}
    lazy = [isinstance(p[0], Lazy) for p in splits.values()]
    if any(lazy) and not all(lazy):
        raise DataError(f"{where}: streamed and in-memory splits cannot be mixed; set "
                        "data.stream=true or false")
    digest = None
    if all(lazy):
        digest = hashlib.sha256("".join(_dataset_digest(p) for p in splits.values())
                                .encode()).hexdigest()[:16]
    return Raw(splits["train"], splits.get("val"), splits.get("test"), source=str(cfg.target),
               digest=digest)
