"""Helpers for the runtime tests: one real pipeline run, untracked, returning its metrics.

The baselines are trained longer than tests/shrink.py's FAST (an undertrained conv net on 8x8
digits sits near 60% with many near-ties, and two int8 implementations then disagree on more
than the half point the runtime must match), and cached once per session: every run of a
model reuses its baseline, as a sweep's trials do."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from compression.run import pipeline
from compression.run.session import fixed_threads

TRAIN = ["train.epochs=12"]


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runtime-baselines")


@pytest.fixture
def run_metrics(compose_cfg, shared_cache: Path) -> Callable[..., dict[str, float]]:
    """run_metrics("runtime=onnxruntime", ...) -> the metrics of one untracked run."""

    def _run(*overrides: str) -> dict[str, float]:
        cfg = compose_cfg("tracking.enabled=false", f"paths.cache={shared_cache}", *TRAIN,
                          *overrides)
        rc, splits = pipeline.check(cfg)
        with fixed_threads(rc.threads):
            return pipeline.execute(rc, splits, None)

    return _run
