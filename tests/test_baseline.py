"""The dense baseline is trained once per config and reused; bad cache entries are retrained."""

from __future__ import annotations

import fcntl
import logging
import shutil
import threading
import time

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from compression.baseline import cache_key, get_baseline
from compression.data import DataConfig, load
from compression.models import ModelConfig
from compression.training import TrainConfig, evaluate

DATA = DataConfig(limit=200)
TRAIN = TrainConfig(epochs=1)


def _get(tmp_path, splits, seed=0, train=TRAIN):
    return get_baseline(ModelConfig(name="mlp"), DATA, train, seed, splits, tmp_path)


def test_second_call_is_a_cache_hit_with_identical_weights(tmp_path, caplog) -> None:
    splits = load(DATA)
    first = _get(tmp_path, splits)
    with caplog.at_level(logging.INFO, logger="compression.baseline"):
        second = _get(tmp_path, splits)
    assert not first.cache_hit and second.cache_hit and second.train_seconds == 0
    assert "baseline cache hit" in caplog.text
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)


def test_key_covers_model_data_training_and_seed() -> None:
    base = cache_key(ModelConfig(name="mlp"), DATA, TRAIN, 0)
    assert base != cache_key(ModelConfig(name="mlp", width=0.5), DATA, TRAIN, 0)
    assert base != cache_key(ModelConfig(name="mlp"), DataConfig(limit=100), TRAIN, 0)
    assert base != cache_key(ModelConfig(name="mlp"), DATA, TrainConfig(epochs=2), 0)
    assert base != cache_key(ModelConfig(name="mlp"), DATA, TRAIN, 1)
    assert base == cache_key(ModelConfig(name="mlp"), DATA, TrainConfig(epochs=1), 0)


def test_corrupt_entry_is_retrained_not_crashed_on(tmp_path, caplog) -> None:
    splits = load(DATA)
    first = _get(tmp_path, splits)
    first.path.write_bytes(b"\x00garbage" * 10)
    with caplog.at_level(logging.WARNING, logger="compression.baseline"):
        again = _get(tmp_path, splits)
    assert not again.cache_hit and "unreadable" in caplog.text
    assert _get(tmp_path, splits).cache_hit  # the retrained entry was written back


def test_accuracies_are_evaluated_once_and_read_back_from_the_entry(tmp_path) -> None:
    splits = load(DATA)
    first = _get(tmp_path, splits)
    second = _get(tmp_path, splits)
    fresh = (evaluate(second.model, splits.test_x, splits.test_y),
             evaluate(second.model, splits.val_x, splits.val_y))
    assert (first.accuracy, first.val_accuracy) == fresh
    assert (second.accuracy, second.val_accuracy) == fresh
    with safe_open(str(second.path), "pt") as f:
        assert float(f.metadata()["accuracy"]) == fresh[0]


def test_entry_without_stored_accuracies_is_evaluated_on_load(tmp_path) -> None:
    """Entries written before the metadata held accuracies still report them."""
    splits = load(DATA)
    first = _get(tmp_path, splits)
    save_file(load_file(str(first.path)), str(first.path), metadata={"key": "old"})
    again = _get(tmp_path, splits)
    assert again.cache_hit
    assert (again.accuracy, again.val_accuracy) == (first.accuracy, first.val_accuracy)


def test_a_process_waits_for_the_one_training_the_entry_then_loads_it(tmp_path, caplog) -> None:
    """Parallel sweep workers on a cold cache: one trains, the others wait and load its entry."""
    splits = load(DATA)
    trained_elsewhere = _get(tmp_path / "other", splits)
    entry = tmp_path / trained_elsewhere.path.name
    result = {}
    with open(entry.with_suffix(".lock"), "a") as lock, \
            caplog.at_level(logging.INFO, logger="compression.baseline"):
        fcntl.flock(lock, fcntl.LOCK_EX)  # as the process training this entry holds it
        waiter = threading.Thread(target=lambda: result.update(b=_get(tmp_path, splits)))
        waiter.start()
        deadline = time.monotonic() + 60
        while "being trained by another process; waiting" not in caplog.text:
            assert time.monotonic() < deadline and waiter.is_alive()
            time.sleep(0.05)
        shutil.copy(trained_elsewhere.path, entry)  # the trainer writes its entry, then unlocks
        fcntl.flock(lock, fcntl.LOCK_UN)
        waiter.join(60)
    assert result["b"].cache_hit and result["b"].train_seconds == 0
    assert "baseline cache miss" not in caplog.text
    for a, b in zip(trained_elsewhere.model.state_dict().values(),
                    result["b"].model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
