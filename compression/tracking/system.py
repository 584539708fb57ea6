"""What a run records about where it ran: flattened params and the system tags (versions,
CPU, git state, host)."""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import re
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from compression.core import paths
from compression.tracking.config import MAX_PARAM_LEN

PARAM_NAME = re.compile(r"[\w\-. :/]+")


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{'a': {'b': 1}} -> {'a.b': '1'}; lists are kept as their string form. A mapping whose keys
    MLflow would not take as names (layer patterns such as `conv*` in pruning.overrides) is
    kept whole as its string form, and so is an empty one ({}), so that it still shows."""
    out: dict[str, str] = {}
    for k, val in d.items():
        key = f"{prefix}{k}"
        if isinstance(val, Mapping) and val and all(PARAM_NAME.fullmatch(str(x)) for x in val):
            out.update(flatten(val, key + "."))
        elif isinstance(val, Mapping):
            out[key] = str(dict(val))[:MAX_PARAM_LEN]
        else:
            out[key] = str(val)[:MAX_PARAM_LEN]
    return out


@functools.cache
def cpu_model() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _git(*args: str) -> str:
    try:
        # the code's own checkout (PROJECT_ROOT), not $COMPRESSION_ROOT where outputs go
        out = subprocess.run(["git", *args], cwd=paths.PROJECT_ROOT, capture_output=True,
                             text=True, timeout=10, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


@functools.cache
def _git_state() -> tuple[str, str]:
    """(commit, dirty) once per process: the code a process runs was loaded at its start, and
    two git subprocesses per job add up in a sweep."""
    commit = _git("rev-parse", "HEAD") or "unknown"
    return commit, str(bool(_git("status", "--porcelain", "--untracked-files=no"))).lower()


def system_tags() -> dict[str, str]:
    import hydra
    import mlflow
    import optuna
    import torch

    commit, dirty = _git_state()
    return {
        "git_commit": commit,
        "mlflow.source.git.commit": commit,
        "git_dirty": dirty,
        "torch_version": torch.__version__,
        "mlflow_version": mlflow.__version__,
        "optuna_version": optuna.__version__,
        "hydra_version": hydra.__version__,
        "python_version": platform.python_version(),
        "torch_threads": str(torch.get_num_threads()),
        "cpu": cpu_model(),
        "cpu_count": str(os.cpu_count()),
        "hostname": socket.gethostname(),
    }
