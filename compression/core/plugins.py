"""Plug-ins from outside the package: a user's own pruning criterion, quantization mode,
runtime (or any other registered kind) in their own module, without forking the project.

A plug-in is a Python module that registers its entries on import, exactly as the built-in
modules do (`@CRITERIA.register("mine")`, `QUANTIZERS.register("mine", MyConfig)(...)`,
`RUNTIMES.register(...)`). Two ways to have it imported, both the user's own choice:

- the config: `plugins=[my_package.my_module]` (a list of import paths; loaded before the rest
  of the config is validated, so its names are valid values of `pruning.criterion` etc.);
- a Python entry point in the group `compression.plugins` of an installed distribution
  (`[project.entry-points."compression.plugins"] mine = "my_package.my_module"`), loaded with
  the built-ins wherever the config is read (train.py, sweeps, analyze.py, the Python API).

Only the config the user runs and the entry points they installed name modules to import:
nothing read back from a run or an artifact is ever imported (artifacts name registered entries,
which are looked up, never imported).
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Iterable

from compression.core.errors import ConfigError, first_line

ENTRY_POINT_GROUP = "compression.plugins"
_IMPORT_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_entry_points_loaded = False


def load_entry_points() -> list[str]:
    """Import every module named by an installed `compression.plugins` entry point (once per
    process). Returns their import paths."""
    global _entry_points_loaded
    found: list[str] = []
    if _may_declare_group(sys.path):
        import importlib.metadata

        found = [ep.value for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)]
    if not _entry_points_loaded:
        _entry_points_loaded = True  # set first: a plug-in importing the config does not recurse
        for path in found:
            _import(path, f"entry point {ENTRY_POINT_GROUP}")
    return found


def _may_declare_group(path: Iterable[str]) -> bool:
    """Whether an installed distribution may declare ENTRY_POINT_GROUP: a `[group]` line in a
    `*.dist-info` / `*.egg-info` entry_points.txt on the path, or a path entry that is not a
    plain folder (a zip, which only importlib.metadata reads). Measured on this project's
    environment (205 distributions): 2 ms, where importing importlib.metadata and asking it
    took 13 ms of every config check's ~0.45 s."""
    marker = f"[{ENTRY_POINT_GROUP}]".encode()
    for folder in path:
        folder = folder or "."
        if not os.path.isdir(folder):
            if os.path.exists(folder):
                return True  # a zip or another kind of entry: ask importlib.metadata
            continue
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.endswith((".dist-info", ".egg-info")) and entry.is_dir():
                    try:
                        with open(os.path.join(entry.path, "entry_points.txt"), "rb") as f:
                            if marker in f.read():
                                return True
                    except OSError:  # no entry points
                        continue
    return False


def load(modules: Iterable[str]) -> list[str]:
    """Import the config's `plugins` (import paths), refusing in one line what is not one or
    does not import. Returns the import paths."""
    if isinstance(modules, str):
        modules = [modules]
    paths = list(modules)
    for path in paths:
        if not isinstance(path, str) or not _IMPORT_PATH.match(path):
            raise ConfigError(f"plugins: {path!r} is not a module import path "
                              "(e.g. my_package.my_criterion)")
        _import(path, "plugins")
    return paths


def _import(path: str, origin: str) -> None:
    if path in sys.modules:
        return
    try:
        importlib.import_module(path)
    except ImportError as e:
        raise ConfigError(f"{origin}: cannot import {path} ({first_line(e)}); is its folder on "
                          "PYTHONPATH or its package installed?") from e
    except ConfigError:
        raise
    except Exception as e:  # the plug-in's own bug: say whose it is, in one line
        raise ConfigError(f"{origin}: importing {path} failed: {type(e).__name__}: "
                          f"{first_line(e)}") from e
