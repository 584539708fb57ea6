"""examples/own_model, shrunken: the user's PNG folder and state_dict, compressed and swept by
overrides alone, with the logged baseline equal to the checkpoint's own test accuracy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from compression.core.paths import PROJECT_ROOT
from compression.run import pipeline
from examples.own_model import prepare
from examples.own_model.model import small_cnn


def _prepare(out: Path, per_class: int = 6) -> Path:
    images = out / "images"
    prepare.write_pngs(images, per_class=per_class, test_per_class=4)
    torch.save(prepare.train(images, epochs=1, seed=0).state_dict(), out / "model.pt")
    return images


def own(out: Path, images: Path) -> list[str]:
    """The README's overrides."""
    return ["model=custom", "model._target_=examples.own_model.model.small_cnn",
            f"model.checkpoint={out / 'model.pt'}", "data=image_folder", f"data.root={images}",
            "data.normalize=false"]


def test_the_example_compresses_the_users_checkpoint_as_it_is(compose_cfg, tracking_uri,
                                                               tmp_path) -> None:
    images = _prepare(tmp_path)
    pipeline.run(compose_cfg(*own(tmp_path, images), "pruning=unstructured",
                             "quantization=dynamic_int8", "measure.latency=false"))
    client = MlflowClient(tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("compression").experiment_id])
    # the user's own evaluation: their loader, their model, the test folder
    model = small_cnn()
    model.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
    test = prepare.Folder(images / "test")
    with torch.no_grad():
        hits = [int(model(x[None]).argmax()) == y for x, y in test]
    assert run.data.metrics["baseline_accuracy"] == int(np.sum(hits)) / len(hits)
    assert run.data.metrics["baseline_train_seconds"] == 0.0
    assert run.data.tags["baseline_source"] == "checkpoint"
    assert run.inputs.dataset_inputs[0].dataset.name == "image_folder"


@pytest.mark.slow
def test_a_sweep_of_the_example_reports(tmp_path) -> None:
    images = _prepare(tmp_path, per_class=10)
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = [f"tracking.uri={db}", f"paths.cache={tmp_path / 'cache'}",
              f"paths.artifacts={tmp_path / 'artifacts'}"]
    sweep = subprocess.run(
        [sys.executable, "train.py", *own(tmp_path, images), "sweep=pareto", *common,
         "hydra.sweeper.n_trials=3", f"hydra.sweeper.storage={tmp_path / 'o.journal'}",
         "finetune.epochs=1", "measure.repeats=5", "measure.warmup=1"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    report = subprocess.run(
        [sys.executable, "analyze.py", "report", "--sweep", "latest", "--tracking-uri", db,
         "--out", str(tmp_path / "report"), "--formats", "png"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert report.returncode == 0, report.stderr[-2000:]
    text = (tmp_path / "report" / "report.md").read_text()
    assert "Pareto" in text and "custom" in text
