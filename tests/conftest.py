"""Shared fixtures: the real conf/ composed with Hydra's compose API, shrunk for speed, with
MLflow on a temporary SQLite database and a temporary baseline cache. The whole session writes
nothing into the project: $COMPRESSION_ROOT (where outputs/, mlflow.db and mlartifacts/ go, also
for the train.py subprocesses tests start) points at a temporary folder."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig
from shrink import FAST

import compression.config.run  # registers the ${project_root:} resolver


@pytest.fixture(scope="session", autouse=True)
def _outputs_in_a_temporary_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("project_root")
    before = os.environ.get("COMPRESSION_ROOT")
    os.environ["COMPRESSION_ROOT"] = str(root)
    yield root
    if before is None:
        del os.environ["COMPRESSION_ROOT"]
    else:
        os.environ["COMPRESSION_ROOT"] = before


@pytest.fixture
def tracking_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def compose_cfg(
    tmp_path: Path, tracking_uri: str
) -> Iterator[Callable[..., DictConfig]]:
    """compose_cfg("pruning=unstructured", ...) -> the real config, fast and isolated."""

    def _compose(*overrides: str, fast: bool = True) -> DictConfig:
        base = [
            f"tracking.uri={tracking_uri}",
            f"paths.cache={tmp_path / 'cache'}",
            f"paths.artifacts={tmp_path / 'artifacts'}",
        ]
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(compression.config.run.CONFIG_DIR),
                                   version_base="1.3"):
            return compose("config", overrides=[*base, *(FAST if fast else []), *overrides])

    yield _compose
    GlobalHydra.instance().clear()
