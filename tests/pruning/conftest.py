"""Fixtures for pruning tests: a real pipeline Session on digits and untrained built-in models."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from compression.config.run import RunConfig
from compression.data import load
from compression.models.build import build_model
from compression.pruning import PRUNERS, MaskSet
from compression.pruning.base import PruneResult
from compression.run.session import Session


@pytest.fixture(scope="session")
def digits():
    from compression.data import DataConfig

    return load(DataConfig())


@pytest.fixture
def make_session(compose_cfg, digits) -> Callable[..., Session]:
    """make_session("pruning=block", ...) -> a Session (fine-tuning off unless overridden)."""

    def _make(*overrides: str) -> Session:
        rc = RunConfig.from_cfg(compose_cfg("finetune.epochs=0", *overrides))
        return Session(rc, digits if rc.data.limit is None else load(rc.data))

    return _make


@pytest.fixture
def prune(make_session) -> Callable[..., tuple[nn.Module, MaskSet, Session]]:
    """prune("model=lenet5", "pruning=nm") -> (pruned model, masks, session); seeded model."""

    def _prune(*overrides: str, model: nn.Module | None = None):
        session = make_session(*overrides)
        torch.manual_seed(0)
        if model is None:
            model = build_model(session.rc.model, session.data.spec)
        cfg = session.rc.pruning
        result = PruneResult.of(PRUNERS[cfg.method](model, cfg, session))
        session.keep(result)  # as the pipeline does: transforms and metrics for what follows
        return model, result.masks, session

    return _prune
