"""compression/training/loop.py: a loss that turns NaN or infinite stops training in one line, and a
diverged baseline is never cached."""

from __future__ import annotations

import pytest
import torch

from compression.core.errors import ConfigError
from compression.data import DataConfig, load
from compression.models.build import ModelConfig, build_model
from compression.training.baseline import get_baseline
from compression.training.loop import DivergedError, TrainConfig, train

# Finite, in-range settings that diverge on the MLP (NaN at step 43, in the third epoch).
DIVERGES = TrainConfig(epochs=3, lr=5.0, optimizer="sgd", momentum=0.99)


def test_a_nan_loss_stops_training_at_that_step_in_one_line() -> None:
    splits = load(DataConfig())
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="mlp"), splits.spec)
    with pytest.raises(DivergedError) as err:
        train(model, splits, DIVERGES, desc="finetune")
    message = str(err.value)
    assert isinstance(err.value, ConfigError) and "\n" not in message  # train.py: exit 2
    assert message.startswith("finetune: the training loss became nan at step ")
    assert "lower the learning rate" in message


def test_a_diverged_baseline_is_not_cached(tmp_path) -> None:
    data = DataConfig()
    splits = load(data)
    with pytest.raises(DivergedError, match=r"^baseline: the training loss became nan"):
        get_baseline(ModelConfig(name="mlp"), data, DIVERGES, 0, splits, tmp_path)
    assert not list(tmp_path.glob("*.safetensors"))
    # the same entry trains (and is cached) once the settings are sane
    ok = TrainConfig(epochs=1)
    assert not get_baseline(ModelConfig(name="mlp"), data, ok, 0, splits, tmp_path).cache_hit
    assert len(list(tmp_path.glob("*.safetensors"))) == 1
