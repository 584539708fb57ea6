"""The user's own data: npz, csv, image folders (in memory and streamed), custom factories;
every bad-data case one line before training; the dataset logged as an MLflow input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from PIL import Image

from compression import data
from compression.core import paths
from compression.core.errors import ConfigError
from compression.data import DataConfig, DataError, Lazy
from compression.run import pipeline

RNG = np.random.default_rng(0)


def _npz(tmp_path: Path, **arrays) -> str:
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    return str(path)


def _images(n: int, classes: int = 3, size: int = 8, channels: int = 1):
    y = np.arange(n) % classes
    x = (RNG.random((n, channels, size, size)) * 60 + y[:, None, None, None] * 60)
    return x.astype(np.float32), y


def write_folder(root: Path, per_class: int = 6, classes: int = 3, size: int = 8,
                 mode: str = "L") -> Path:
    for c in range(classes):
        (root / f"class_{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape = (size, size) if mode == "L" else (size, size, 3)
            pixels = (RNG.random(shape) * 60 + c * 60).astype(np.uint8)
            Image.fromarray(pixels, mode=None).save(root / f"class_{c}" / f"{i}.png")
    return root


def test_npz_with_train_only_is_carved_with_the_fixed_seed(tmp_path) -> None:
    x, y = _images(100)
    cfg = DataConfig(name="npz", root=_npz(tmp_path, x_train=x, y_train=y), val_fraction=0.2,
                     test_fraction=0.1)
    a, b = data._load(cfg), data._load(cfg)
    assert a.sizes() == "train=70 val=20 test=10"
    assert torch.equal(a.val_x, b.val_x) and torch.equal(a.test_y, b.test_y)
    assert a.spec.input_shape == (1, 8, 8) and a.spec.num_classes == 3
    assert abs(float(a.train_x.mean())) < 1e-5  # standardized with train statistics


def test_npz_given_splits_are_used_as_they_are_and_channels_last_is_moved(tmp_path) -> None:
    x, y = _images(60, channels=3)
    hwc = x.transpose(0, 2, 3, 1)
    root = _npz(tmp_path, x_train=hwc[:40], y_train=y[:40], x_val=hwc[40:50], y_val=y[40:50],
                x_test=hwc[50:], y_test=y[50:])
    s = data._load(DataConfig(name="npz", root=root))
    assert s.sizes() == "train=40 val=10 test=10" and s.spec.input_shape == (3, 8, 8)
    assert torch.equal(s.test_y, torch.from_numpy(y[50:]))
    mean = x[:40].mean(axis=(0, 2, 3))  # per colour channel, from train only
    std = x[:40].std(axis=(0, 2, 3))
    expect = (x[50:] - mean[None, :, None, None]) / std[None, :, None, None]
    assert torch.allclose(s.test_x, torch.from_numpy(expect), atol=1e-5)


def test_csv_file_and_folder_with_named_labels(tmp_path) -> None:
    import pandas as pd

    x = RNG.normal(size=(50, 4))
    labels = np.array(["cat", "dog"])[np.arange(50) % 2]
    frame = pd.DataFrame(x, columns=list("abcd")).assign(kind=labels)
    frame.to_csv(tmp_path / "t.csv", index=False)
    s = data._load(DataConfig(name="csv", root=str(tmp_path / "t.csv"), label="kind"))
    assert s.spec.input_shape == (4,) and s.spec.num_classes == 2 and len(s.train_y) == 30
    folder = tmp_path / "split"
    folder.mkdir()
    frame[:40].to_csv(folder / "train.csv", index=False)
    frame[40:].to_csv(folder / "test.csv", index=False)
    s = data._load(DataConfig(name="csv", root=str(folder), label="kind"))
    assert len(s.test_y) == 10 and s.test_y.tolist() == [0, 1] * 5  # cat=0, dog=1 everywhere


def test_image_folder_flat_and_split_layouts(tmp_path) -> None:
    flat = write_folder(tmp_path / "flat", per_class=10)
    s = data._load(DataConfig(name="image_folder", root=str(flat), val_fraction=0.1,
                              test_fraction=0.1))
    assert s.sizes() == "train=24 val=3 test=3" and s.spec.input_shape == (1, 8, 8)
    layered = tmp_path / "layered"
    write_folder(layered / "train", per_class=5)
    write_folder(layered / "test", per_class=2)
    s = data._load(DataConfig(name="image_folder", root=str(layered), image_size=4,
                              channels=3))
    assert len(s.test_y) == 6 and s.spec.input_shape == (3, 4, 4) and s.spec.num_classes == 3


def test_a_streamed_folder_gives_the_same_examples_as_one_in_memory(tmp_path) -> None:
    root = str(write_folder(tmp_path / "imgs", per_class=8, mode="RGB"))
    mem = data._load(DataConfig(name="image_folder", root=root, stream=False))
    lazy = data._load(DataConfig(name="image_folder", root=root, stream=True))
    assert isinstance(lazy.train_x, Lazy) and lazy.streamed and not mem.streamed
    assert lazy.digest == data._load(DataConfig(name="image_folder", root=root,
                                                stream=True)).digest
    assert torch.equal(mem.train_y, lazy.train_y)
    assert torch.allclose(mem.train_x, lazy.train_x[:], atol=1e-5)
    assert torch.allclose(mem.test_x[2:4], lazy.test_x[torch.tensor([2, 3])], atol=1e-5)
    got = torch.cat([xb for xb, _ in data.batches(lazy.val_x, lazy.val_y, 2)])
    assert torch.allclose(got, mem.val_x, atol=1e-5)


def test_custom_factory_of_arrays_and_of_datasets(tmp_path) -> None:
    s = data._load(DataConfig(name="custom", target="factories.blobs", kwargs={"n": 90}))
    assert s.spec.input_shape == (6,) and len(s.train_y) + len(s.val_y) + len(s.test_y) == 90
    d = data._load(DataConfig(name="custom", target="factories.datasets"))
    assert d.sizes() == "train=80 val=20 test=20" and d.spec.input_shape == (1, 8, 8)
    streamed = data._load(DataConfig(name="custom", target="factories.datasets", stream=True))
    assert streamed.streamed and torch.allclose(streamed.val_x[:], d.val_x, atol=1e-5)


BAD_NPZ = {
    "x/y length": ({"x_train": np.zeros((5, 3)), "y_train": np.zeros(4)},
                   "x has 5 examples but y has 4 labels"),
    "NaN": ({"x_train": np.array([[0.0, 1], [np.nan, 2]] * 5), "y_train": np.arange(10) % 2},
            "NaN or infinite values"),
    "negative label": ({"x_train": np.zeros((10, 2)), "y_train": np.array([0, 1] * 4 + [-1, 0])},
                       "label -1 is outside 0..1"),
    "float labels": ({"x_train": np.zeros((4, 2)), "y_train": np.array([0.5, 1, 0, 1])},
                     "labels must be integers"),
    "no y_train": ({"x_train": np.zeros((4, 2))}, "needs x_train and y_train"),
}


@pytest.mark.parametrize("case", sorted(BAD_NPZ))
def test_bad_npz_is_one_line(tmp_path, case) -> None:
    arrays, needle = BAD_NPZ[case]
    with pytest.raises(DataError, match=needle) as e:
        data._load(DataConfig(name="npz", root=_npz(tmp_path, **arrays)))
    assert "\n" not in str(e.value)


def test_labels_beyond_the_configured_class_count(tmp_path) -> None:
    root = _npz(tmp_path, x_train=np.zeros((10, 2)), y_train=np.arange(10) % 5)
    with pytest.raises(DataError, match=r"label 3 is outside 0..2"):
        data._load(DataConfig(name="npz", root=root, num_classes=3))


def test_bad_image_folders_are_one_line(tmp_path) -> None:
    cfg = lambda root, **kw: DataConfig(name="image_folder", root=str(root), **kw)  # noqa: E731
    with pytest.raises(DataError, match="no such folder"):
        data._load(cfg(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no class folders"):
        data._load(cfg(tmp_path / "empty"))
    root = write_folder(tmp_path / "imgs", per_class=4)
    (root / "class_9").mkdir()
    with pytest.raises(DataError, match=r"class folder .*class_9 holds no PNG or JPEG"):
        data._load(cfg(root))
    (root / "class_9").rmdir()
    (root / "class_1" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    for stream in (False, True):
        with pytest.raises(DataError, match=r"corrupt or unreadable image .*class_1/2.png") as e:
            data._load(cfg(root, stream=stream, num_workers=1 if stream else 0))
        assert "\n" not in str(e.value)


def test_bad_csv_is_one_line(tmp_path) -> None:
    (tmp_path / "t.csv").write_text("a,b,y\n1,2,0\n3,4,1\n")
    with pytest.raises(DataError, match=r"has no label column 'label'.*set data.label"):
        data._load(DataConfig(name="csv", root=str(tmp_path / "t.csv")))
    (tmp_path / "s.csv").write_text("a,b,label\n1,x,0\n3,4,1\n")
    with pytest.raises(DataError, match="column 'b' is not numeric"):
        data._load(DataConfig(name="csv", root=str(tmp_path / "s.csv")))


def test_data_the_model_input_does_not_fit_is_refused(compose_cfg) -> None:
    with pytest.raises(ConfigError, match=r"cannot run on custom inputs of shape \(1, 6\)"):
        pipeline.check(compose_cfg("data=custom", "data._target_=factories.blobs",
                                   "model=lenet5"))


def test_custom_data_and_model_run_end_to_end_with_the_dataset_logged(compose_cfg,
                                                                      tracking_uri) -> None:
    cfg = compose_cfg("data=custom", "data._target_=factories.blobs", "~model",
                      "+model._target_=factories.tabular_mlp", "pruning=unstructured",
                      "pruning.sparsity=0.5", "train.epochs=40", "train.lr=0.01",
                      "tracking.run_name=tab")
    pipeline.run(cfg)
    client = MlflowClient(tracking_uri)
    run = client.search_runs([client.get_experiment_by_name("compression").experiment_id])[0]
    (inp,) = run.inputs.dataset_inputs
    assert inp.dataset.name == "custom" and inp.dataset.digest == pipeline.check(cfg)[1].digest
    assert '"input_shape": [6]' in inp.dataset.profile
    assert run.data.metrics["baseline_accuracy"] > 0.8


def test_a_streamed_image_folder_trains_end_to_end(compose_cfg, tmp_path) -> None:
    root = write_folder(tmp_path / "imgs", per_class=12, classes=4)
    out = pipeline.run(compose_cfg("data=image_folder", f"data.root={root}", "data.stream=true",
                                   "~model", "+model._target_=factories.lenet_like_for_8x8",
                                   "tracking.enabled=false", "measure.latency=false"))
    assert 0 <= out <= 1


def test_cli_bad_data_exits_2_in_one_line_with_nothing_in_mlflow(tmp_path) -> None:
    root = _npz(tmp_path, x_train=np.zeros((5, 3)), y_train=np.zeros(4))
    db = tmp_path / "mlflow.db"
    proc = subprocess.run(
        [sys.executable, "train.py", "data=npz", f"data.root={root}",
         f"tracking.uri=sqlite:///{db}", f"paths.cache={tmp_path}/cache"],
        cwd=paths.PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: d.npz train split: x has 5 examples but y has 4 labels")
    assert not db.exists() or not MlflowClient(f"sqlite:///{db}").search_runs(
        [e.experiment_id for e in MlflowClient(f"sqlite:///{db}").search_experiments()])
