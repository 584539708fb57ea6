"""The Python API: the same config and pipeline as train.py, from a notebook."""

from __future__ import annotations

import factories
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from shrink import FAST
from torch import nn

from compression import compress, load
from compression.core.errors import ConfigError
from compression.run.api import overrides_for
from compression.training.loop import evaluate


@pytest.fixture
def common(tmp_path, tracking_uri) -> list[str]:
    return [*FAST, f"tracking.uri={tracking_uri}", f"paths.cache={tmp_path / 'cache'}",
            f"paths.artifacts={tmp_path / 'artifacts'}", "measure.latency=false"]


def _blobs(n: int = 240):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, n)
    return (rng.normal(size=(n, 6)) + 3 * y[:, None]).astype(np.float32), y


def test_a_trained_instance_on_arrays_is_compressed_as_it_is(common, tracking_uri) -> None:
    x, y = _blobs()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(100):  # the user's own training, outside the framework
        opt.zero_grad()
        nn.functional.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        opt.step()
    train, val, test = (x[:160], y[:160]), (x[160:200], y[160:200]), (x[200:], y[200:])
    r = compress(net, data=(train, val, test), pruning="unstructured", sparsity=0.5,
                 quantization="dynamic_int8", overrides=common)
    assert r.metrics["baseline_train_seconds"] == 0.0
    run = MlflowClient(tracking_uri).get_run(r.run_id)
    assert run.data.tags["baseline_source"] == "checkpoint"
    assert run.data.params["pruning.method"] == "unstructured"
    assert r.metrics["sparsity"] >= 0.45 and r.artifact.is_file()
    back = load(r.artifact, model=net)
    mean, std = x[:160].mean(axis=0), x[:160].std(axis=0)  # train statistics, per feature
    probe = torch.from_numpy((x[200:] - mean) / std)
    assert torch.equal(back(probe), r.model(probe))
    assert evaluate(back, probe, torch.from_numpy(y[200:])) == r.metrics["accuracy"]


def test_a_factory_and_sections_as_mappings(common) -> None:
    r = compress(factories.tiny_mlp, data="digits", train={"epochs": 2},
                 tracking={"enabled": False}, overrides=common)
    assert r.run_id is None and r.config.model.target == "factories.tiny_mlp"
    assert r.config.train.epochs == 2
    assert isinstance(load(r.artifact, model=factories.tiny_mlp), nn.Sequential)


def test_the_same_validation_as_the_cli(common) -> None:
    with pytest.raises(ConfigError, match=r"pruning\.sparsity=1\.5 is out of range"):
        compress("mlp", pruning="unstructured", sparsity=1.5, overrides=common)


def test_a_user_model_artifact_is_not_loaded_without_its_factory(common) -> None:
    r = compress(lambda: factories.tiny_mlp(8), tracking={"enabled": False}, overrides=common)
    with pytest.raises(ConfigError, match="holds a user model"):
        load(r.artifact)
    with pytest.raises(ConfigError, match="holds a user model"):
        load(r.artifact, model=factories.tiny_mlp)  # another factory than the one recorded


def test_overrides_for_names_everything_as_hydra_overrides() -> None:
    got = overrides_for("lenet5", "fashion_mnist", pruning="structured", sparsity=0.5,
                        quantization="fp16", metric="macro_f1", train__epochs=3,
                        finetune={"lr": 0.01})
    assert got == ["model=lenet5", "data=fashion_mnist", "pruning=structured",
                   "pruning.sparsity=0.5", "quantization=fp16", "metric=macro_f1",
                   "train.epochs=3", "finetune.lr=0.01"]
