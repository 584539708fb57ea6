"""The dense baseline is trained once per config and reused; bad cache entries are retrained."""

from __future__ import annotations

import fcntl
import logging
import shutil
import threading
import time

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from compression.data import DataConfig, load
from compression.models.build import ModelConfig
from compression.training.baseline import cache_key, get_baseline
from compression.training.loop import TrainConfig, evaluate

DATA = DataConfig(limit=200)
TRAIN = TrainConfig(epochs=1)


def _get(tmp_path, splits, seed=0, train=TRAIN):
    return get_baseline(ModelConfig(name="mlp"), DATA, train, seed, splits, tmp_path)


def test_second_call_is_a_cache_hit_with_identical_weights(tmp_path, caplog) -> None:
    splits = load(DATA)
    first = _get(tmp_path, splits)
    with caplog.at_level(logging.INFO, logger="compression.training.baseline"):
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
    with caplog.at_level(logging.WARNING, logger="compression.training.baseline"):
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
            caplog.at_level(logging.INFO, logger="compression.training.baseline"):
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


USER_MODEL = '''
from torch import nn


class Net(nn.Module):
    def __init__(self, width=4):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(),
                                  nn.Linear(width, 10))

    def forward(self, x):
        return self.body(x)


def make(width=4):
    return Net(width)
'''


def _user_module(tmp_path, monkeypatch, name: str):
    path = tmp_path / f"{name}.py"
    path.write_text(USER_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    return path, ModelConfig.from_dict({"_target_": f"{name}.make"})


def test_editing_the_user_model_source_changes_the_key(tmp_path, monkeypatch) -> None:
    path, cfg = _user_module(tmp_path, monkeypatch, "user_model_edit")
    before = cache_key(cfg, DATA, TRAIN, 0)
    assert before == cache_key(cfg, DATA, TRAIN, 0)
    path.write_text(USER_MODEL.replace("nn.ReLU()", "nn.GELU()"))
    assert cache_key(cfg, DATA, TRAIN, 0) != before


def test_a_model_class_in_another_file_is_hashed_too(tmp_path, monkeypatch) -> None:
    """The factory may live in one file and the class it builds in another."""
    classes, _ = _user_module(tmp_path, monkeypatch, "user_model_classes")
    (tmp_path / "user_model_factory.py").write_text(
        "from user_model_classes import Net\n\ndef make():\n    return Net()\n")
    cfg = ModelConfig.from_dict({"_target_": "user_model_factory.make"})
    from compression.models.build import build_model

    built = build_model(cfg, load(DATA).spec)
    before = cache_key(cfg, DATA, TRAIN, 0, built=built)
    classes.write_text(USER_MODEL + "\n# edited\n")
    assert cache_key(cfg, DATA, TRAIN, 0, built=built) != before


def test_key_covers_training_code_torch_version_data_digest_and_checkpoint(
        tmp_path, monkeypatch) -> None:
    from compression.models import fingerprint

    base = cache_key(ModelConfig(name="mlp"), DATA, TRAIN, 0, data_digest="a")
    assert base != cache_key(ModelConfig(name="mlp"), DATA, TRAIN, 0, data_digest="b")
    ckpt = tmp_path / "w.pt"
    torch.save({"x": torch.zeros(1)}, ckpt)
    with_ckpt = cache_key(ModelConfig(name="mlp", checkpoint=str(ckpt)), DATA, TRAIN, 0)
    torch.save({"x": torch.ones(1)}, ckpt)
    assert with_ckpt != cache_key(ModelConfig(name="mlp", checkpoint=str(ckpt)), DATA, TRAIN, 0)
    monkeypatch.setattr(torch, "__version__", "0.0.0-other")
    assert base != cache_key(ModelConfig(name="mlp"), DATA, TRAIN, 0, data_digest="a")
    monkeypatch.undo()
    copy = tmp_path / "pkg"
    shutil.copytree(fingerprint.PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(fingerprint, "PACKAGE_DIR", copy)
    assert base == cache_key(ModelConfig(name="mlp"), DATA, TRAIN, 0, data_digest="a")
    with (copy / "training" / "loop.py").open("a") as f:
        f.write("\n# an edited training loop\n")
    assert base != cache_key(ModelConfig(name="mlp"), DATA, TRAIN, 0, data_digest="a")


def test_a_user_factorys_own_width_is_passed_through(tmp_path, monkeypatch) -> None:
    from compression.models.build import build_model

    _, cfg = _user_module(tmp_path, monkeypatch, "user_model_width")
    wide = ModelConfig.from_dict({"_target_": "user_model_width.make", "width": 8})
    assert wide.kwargs == {"width": 8} and wide.width == 1.0  # the framework's stays 1
    assert build_model(wide, load(DATA).spec).body[1].out_features == 8
    assert build_model(cfg, load(DATA).spec).body[1].out_features == 4
    assert cache_key(wide, DATA, TRAIN, 0) != cache_key(cfg, DATA, TRAIN, 0)


def test_a_width_the_factory_does_not_take_is_dropped_at_1_and_refused_otherwise() -> None:
    from compression.core.errors import ConfigError
    from compression.models.build import build_model

    spec = load(DATA).spec
    carried = ModelConfig.from_dict({"_target_": "factories.tiny_mlp", "width": 1.0})
    assert build_model(carried, spec)[1].out_features == 16  # mlp.yaml's width=1: dropped
    with pytest.raises(ConfigError, match=r"model.width=8: .*takes no width argument"):
        build_model(ModelConfig.from_dict({"_target_": "factories.tiny_mlp", "width": 8}), spec)
