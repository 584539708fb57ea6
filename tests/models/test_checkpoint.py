"""Pretrained checkpoints: formats read safely, mismatches in one line, the baseline as loaded."""

from __future__ import annotations

import hashlib

import pytest
import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import save_file

from compression.data import DataConfig, load
from compression.models.build import ModelConfig, build_model
from compression.models.checkpoint import CheckpointError, load_into, read
from compression.run import pipeline

SPEC = load(DataConfig()).spec


def _mlp() -> torch.nn.Module:
    torch.manual_seed(1)
    return build_model(ModelConfig(name="mlp", width=0.1), SPEC)


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                 b.state_dict().values(), strict=True))


@pytest.mark.parametrize("form", ["safetensors", "pt", "state_dict", "model", "module."])
def test_every_format_loads_the_same_weights(tmp_path, form) -> None:
    src, state = _mlp(), _mlp().state_dict()
    path = tmp_path / ("w.safetensors" if form == "safetensors" else "w.pt")
    if form == "safetensors":
        save_file(state, str(path))
    elif form == "module.":  # as nn.DataParallel saves it
        torch.save({f"module.{k}": v for k, v in state.items()}, path)
    else:
        torch.save(state if form == "pt" else {form: state, "epoch": 3}, path)
    torch.manual_seed(2)
    dst = build_model(ModelConfig(name="mlp", width=0.1), SPEC)
    assert not _same(src, dst)
    load_into(dst, path)
    assert _same(src, dst)


def test_a_pickled_whole_model_is_refused_saying_how_to_save_a_state_dict(tmp_path) -> None:
    path = tmp_path / "whole.pt"
    torch.save(_mlp(), path)
    with pytest.raises(CheckpointError, match=r"pickled whole model.*model.state_dict\(\)") as e:
        read(path)
    assert "\n" not in str(e.value)


def test_missing_unexpected_and_misshaped_keys_in_one_line(tmp_path) -> None:
    state = _mlp().state_dict()
    del state["fc1.bias"]
    state["extra.weight"] = torch.zeros(1)
    state["fc2.weight"] = torch.zeros(3, 3)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as e:
        load_into(_mlp(), path)
    msg = str(e.value)
    assert "\n" not in msg
    assert "missing keys fc1.bias (1)" in msg and "unexpected keys extra.weight (1)" in msg
    assert "fc2.weight (3, 3) vs model (10, 30)" in msg


def test_many_missing_keys_name_the_first_few_and_the_count(tmp_path) -> None:
    path = tmp_path / "empty_ish.pt"
    torch.save({"other.weight": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match=r"missing keys fc1.weight, fc1.bias, fc2.weight, "
                                              r"\.\.\. \(6 in all\)"):
        load_into(_mlp(), path)


@pytest.mark.parametrize("content", [b"not a checkpoint", None])
def test_unreadable_or_absent_file_is_one_line(tmp_path, content) -> None:
    path = tmp_path / "x.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"model\.checkpoint=") as e:
        read(path)
    # one line, and never torch's advice to load with weights_only=False (runs the file's code)
    assert "\n" not in str(e.value) and "weights_only` set to `False" not in str(e.value)
    if content is not None:
        assert "Unsupported operand" in str(e.value)  # what the safe loader really found


def test_checkpoint_baseline_is_evaluated_as_is_never_trained(compose_cfg, tracking_uri,
                                                               tmp_path) -> None:
    """A baseline trained and cached by one run, saved as the user would, is the next run's
    baseline: 0 s of training, the same accuracy to the last digit, its sha256 logged."""
    pipeline.run(compose_cfg("tracking.run_name=train"))
    cached = next((tmp_path / "cache").glob("*.safetensors"))
    model = build_model(ModelConfig(name="mlp"), SPEC)
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(cached)))
    ckpt = tmp_path / "model.pt"
    torch.save(model.state_dict(), ckpt)
    pipeline.run(compose_cfg(f"model.checkpoint={ckpt}", "pruning=unstructured",
                             "tracking.run_name=ckpt"))
    client = MlflowClient(tracking_uri)
    runs = {r.info.run_name: r for r in client.search_runs(
        [client.get_experiment_by_name("compression").experiment_id])}
    trained, loaded = runs["train"].data, runs["ckpt"].data
    assert loaded.metrics["baseline_train_seconds"] == 0.0
    assert loaded.metrics["baseline_accuracy"] == trained.metrics["baseline_accuracy"]
    assert loaded.tags["baseline_source"] == "checkpoint"
    assert loaded.tags["checkpoint_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert loaded.params["model.checkpoint"] == str(ckpt)


def test_a_checkpoint_that_does_not_fit_fails_before_any_run(compose_cfg, tracking_uri,
                                                             tmp_path) -> None:
    ckpt = tmp_path / "lenet.pt"
    torch.save(build_model(ModelConfig(name="lenet5"), SPEC).state_dict(), ckpt)
    with pytest.raises(CheckpointError, match="does not fit the model: unexpected keys conv1"):
        pipeline.run(compose_cfg(f"model.checkpoint={ckpt}"))
    exp = MlflowClient(tracking_uri).get_experiment_by_name("compression")
    assert exp is None or not MlflowClient(tracking_uri).search_runs([exp.experiment_id])
