"""Fixtures for quantization tests: digits splits and small baselines trained once per session."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from torch import nn

from compression import data as data_mod
from compression.config.run import RunConfig
from compression.models.build import ModelConfig, build_model
from compression.run.session import Session
from compression.training.loop import TrainConfig, train


@pytest.fixture(scope="session")
def digits() -> data_mod.Splits:
    return data_mod.load(data_mod.DataConfig(name="digits"))


@pytest.fixture(scope="session")
def run_config() -> RunConfig:
    return RunConfig.from_cfg({"train": {"epochs": 3}, "finetune": {"epochs": 1},
                               "tracking": {"enabled": False}})


@pytest.fixture(scope="session")
def trained(digits: data_mod.Splits) -> Callable[[str], nn.Module]:
    """trained("mlp") -> a fresh copy of a model trained 10 epochs on digits (cached)."""
    cache: dict[str, nn.Module] = {}

    def get(name: str) -> nn.Module:
        if name not in cache:
            torch.manual_seed(0)
            model = build_model(ModelConfig(name=name), digits.spec)
            train(model, digits, TrainConfig(epochs=10), seed=0)
            cache[name] = model.eval()
        return copy.deepcopy(cache[name])

    return get


@pytest.fixture
def session(run_config: RunConfig, digits: data_mod.Splits) -> Session:
    """A pipeline Session whose (QAT) fine-tuning sees 256 training images: enough to run."""
    small = data_mod.Splits(digits.spec, digits.train_x[:256], digits.train_y[:256],
                            digits.val_x, digits.val_y, digits.test_x, digits.test_y)
    return Session(run_config, small)
