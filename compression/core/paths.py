"""Where things live on disk, resolved once from the project root.

Hydra gives each job its own output folder; everything that must be shared across the jobs of a
sweep (the MLflow database, the baseline cache, analysis output) is anchored here instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def project_root() -> Path:
    """The repository root (or $COMPRESSION_ROOT, so an installed copy can point elsewhere)."""
    return Path(os.environ.get("COMPRESSION_ROOT", PROJECT_ROOT)).resolve()


def output_dir() -> Path:
    """Git-ignored folder for everything runs write (Hydra outputs, caches, analysis)."""
    return project_root() / "outputs"


def default_tracking_uri() -> str:
    return f"sqlite:///{project_root() / 'mlflow.db'}"


def default_artifact_root() -> Path:
    return project_root() / "mlartifacts"


def resolve(path: str | os.PathLike[str]) -> Path:
    """Resolve a relative path against the project root, never against a job's cwd."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (project_root() / p).resolve()


def write_json_atomic(path: Path, data: object) -> None:
    """Write `data` as JSON so that readers (other trials of a sweep) see the old file or the
    whole new one, never a part: a temporary file per process, then an atomic rename."""
    import json
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def cached_json(path: Path | None, compute: Callable[[], Any], what: str) -> Any:
    """The JSON kept at `path`, or `compute()` written there atomically (and logged as `what`)
    when it is missing; `path` None: computed, nothing kept. What comes back is either the
    stored JSON or the computed value, so callers normalize both the same way."""
    import json
    import logging

    if path is not None and path.exists():
        return json.loads(path.read_text())
    data = compute()
    if path is not None:
        write_json_atomic(path, data)
        logging.getLogger(__name__).info("%s cached at %s", what, path)
    return data
