"""The character LM, data=text and perplexity: causality, positional splits, the default corpus,
the metric's direction, and a tiny run through train.py as a user types it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from shrink import FAST

from compression.config.run import RunConfig
from compression.core.errors import ConfigError
from compression.core.paths import PROJECT_ROOT
from compression.data import DataConfig, load
from compression.data.text import DEFAULT_CORPUS, FALLBACK_CORPUS, default_root
from compression.models.build import ModelConfig, build_model, check_fits
from compression.models.charlm import CharLM
from compression.run.pipeline import run
from compression.training import quality

TINY = ["model=charlm", "data=text", "data.context=32", "data.limit=64", "model.width=0.5",
        "train.epochs=2", "finetune.epochs=0"]


def test_changing_a_later_byte_leaves_earlier_logits_alone() -> None:
    torch.manual_seed(0)
    model = CharLM(256, 16).eval()
    x = torch.randint(0, 256, (3, 16)).float()
    later = x.clone()
    later[:, 10] = (later[:, 10] + 7) % 256
    with torch.no_grad():
        a, b = model(x), model(later)
    assert a.shape == (3, 256, 16)  # (B, V, T): torch's cross-entropy layout
    torch.testing.assert_close(a[..., :10], b[..., :10])
    assert not torch.allclose(a[..., 10:], b[..., 10:])


def test_text_is_split_by_position_into_contiguous_blocks(tmp_path: Path) -> None:
    corpus = bytes(np.random.default_rng(0).integers(0, 256, 1000, dtype=np.uint8))
    (tmp_path / "a.txt").write_bytes(corpus[:600])
    (tmp_path / "b.txt").write_bytes(corpus[600:])  # a folder: files in sorted order
    s = load(DataConfig(name="text", root=str(tmp_path), context=8, val_fraction=0.2,
                        test_fraction=0.1))
    data = np.frombuffer(corpus, np.uint8)
    val = s.val_x.numpy().astype(np.uint8).reshape(-1)
    test = s.test_x.numpy().astype(np.uint8).reshape(-1)
    assert bytes(val) == bytes(data[700 : 700 + len(val)])  # train | val | test, in order
    assert bytes(test) == bytes(data[900 : 900 + len(test)])
    assert len(s.train_y) == (700 - 1) // 8 and len(s.val_y) == 199 // 8
    train = {bytes(r) for r in s.train_x.numpy().astype(np.uint8)}
    assert train == {bytes(data[i : i + 8]) for i in range(0, 8 * len(s.train_y), 8)}
    torch.testing.assert_close(s.val_x[:, 1:], s.val_y[:, :-1].float())  # y: the next byte
    assert s.spec.sequence and s.spec.num_classes == 256 and s.spec.input_shape == (8,)
    other = load(DataConfig(name="text", root=str(tmp_path), context=16, val_fraction=0.2,
                            test_fraction=0.1))
    assert other.digest != s.digest  # the context is part of the data digest (cache key)


def test_the_default_corpus_ships_offline() -> None:
    root = default_root()
    assert root in (DEFAULT_CORPUS, FALLBACK_CORPUS) and root.is_dir()
    assert any(FALLBACK_CORPUS.glob("*.md"))  # the fallback is in the repository
    s = load(DataConfig(name="text", val_fraction=0.1, test_fraction=0.1))
    assert s.source == str(root) and len(s.test_y) > 10 and len(s.digest) > 16


def test_a_text_block_shorter_than_one_window_is_refused(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("short text")
    with pytest.raises(ConfigError, match="fewer than one window"):
        load(DataConfig(name="text", root=str(tmp_path / "t.txt"), context=64))


def test_charlm_refuses_image_data_and_image_models_refuse_text(compose_cfg) -> None:
    digits = load(DataConfig())
    with pytest.raises(ConfigError, match="use data=text"):
        build_model(ModelConfig(name="charlm"), digits.spec)
    text = load(RunConfig.from_cfg(compose_cfg(*TINY)).data)
    with pytest.raises(ConfigError, match="at every position"):
        check_fits(build_model(ModelConfig(name="mlp"), text.spec), text.spec,
                   ModelConfig(name="mlp"))


def test_perplexity_is_lower_is_better_and_its_drop_is_quality_lost() -> None:
    labels = torch.randint(0, 256, (4, 8))
    uniform = torch.zeros(4, 256, 8)
    sure = torch.nn.functional.one_hot(labels, 256).permute(0, 2, 1).float() * 50
    assert quality.perplexity(uniform, labels) == pytest.approx(256, rel=1e-4)
    assert quality.perplexity(sure, labels) == pytest.approx(1.0, abs=1e-3)
    assert not quality.higher_is_better("perplexity") and quality.higher_is_better("top1")
    assert quality.quality_loss(5.0, 7.0, "perplexity") == 2.0  # perplexity rose: a loss
    assert quality.quality_loss(0.9, 0.8, "top1") == pytest.approx(0.1)
    assert quality.top1(sure, labels) == 1.0  # every position counted


def test_text_defaults_to_perplexity_and_top1_is_next_byte_accuracy(compose_cfg) -> None:
    assert RunConfig.from_cfg(compose_cfg(*TINY)).metric.name == "perplexity"
    assert RunConfig.from_cfg(compose_cfg(*TINY, "metric=top1")).metric.name == "top1"


@pytest.mark.slow  # two pipeline runs, one baseline: ~15 s idle, ~50 s on a loaded machine
def test_pruning_more_raises_perplexity_and_the_drop_is_positive(compose_cfg) -> None:
    results = {}
    for sparsity in (0.3, 0.9):
        sink: dict = {}
        run(compose_cfg(*TINY, "train.epochs=4", "tracking.enabled=false",
                        "measure.latency=false", "pruning=unstructured",
                        f"pruning.sparsity={sparsity}"), sink)
        results[sparsity] = sink["metrics"]
    low, high = results[0.3], results[0.9]
    assert high["perplexity"] > low["perplexity"] > 1
    assert high["accuracy_drop"] > 0 and high["val_accuracy_drop"] > 0
    assert high["accuracy_drop"] == pytest.approx(high["accuracy"] - high["baseline_accuracy"])


@pytest.mark.slow  # a train.py process: ~20 s idle, ~55 s on a loaded machine
def test_a_tiny_charlm_run_through_train_py(tmp_path: Path, tracking_uri: str) -> None:
    cmd = [sys.executable, "train.py", *FAST, *TINY, f"tracking.uri={tracking_uri}",
           f"paths.cache={tmp_path / 'cache'}", f"paths.artifacts={tmp_path / 'artifacts'}",
           f"hydra.run.dir={tmp_path / 'run'}", "pruning=nm", "quantization=dynamic_int8"]
    out = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    client = MlflowClient(tracking_uri=tracking_uri)
    (r,) = client.search_runs([client.get_experiment_by_name("compression").experiment_id])
    assert r.data.params["metric.name"] == "perplexity"
    assert r.data.metrics["perplexity"] == r.data.metrics["accuracy"] > 1
    assert r.data.metrics["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert "perplexity" in out.stdout + out.stderr  # the summary line names the metric


@pytest.mark.slow  # two sweeps and a report: minutes on a loaded machine
def test_sweeps_and_the_report_on_charlm(tmp_path: Path, tracking_uri: str) -> None:
    """sweep=sparsity_curve and sweep=pareto as presets, shrunk; the study minimizes perplexity
    (val_accuracy holds it) and analyze.py report names it."""
    import optuna

    base = [sys.executable, "train.py", "-m", *FAST, *TINY, f"tracking.uri={tracking_uri}",
            f"paths.cache={tmp_path / 'cache'}", f"paths.artifacts={tmp_path / 'artifacts'}",
            f"hydra.sweep.dir={tmp_path / 'multirun'}", "measure.repeats=3",
            f"hydra.sweeper.storage=sqlite:///{tmp_path / 'optuna.db'}"]
    for extra in (["sweep=sparsity_curve", "pruning=unstructured", "pruning.sparsity=0.5,0.9",
                   "seed=0"],
                  ["sweep=pareto", "hydra.sweeper.n_trials=3", "pruning=unstructured",
                   "quantization=none,dynamic_int8,static_int8"]):
        out = subprocess.run([*base, *extra], cwd=PROJECT_ROOT, capture_output=True, text=True,
                             timeout=900)
        assert out.returncode == 0, out.stderr[-2000:]
    curve = optuna.load_study(study_name="sparsity_curve-text-charlm",
                              storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [d.name for d in curve.directions] == ["MINIMIZE"]
    best = min(curve.trials, key=lambda t: t.value)
    assert curve.best_trial.number == best.number
    report = subprocess.run([sys.executable, "analyze.py", "report", "--sweep", "latest",
                             "--tracking-uri", tracking_uri, "--out", str(tmp_path / "report"),
                             "--tolerance", "50", "--no-log"], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=600)
    assert report.returncode == 0, report.stderr[-2000:]
    text = (tmp_path / "report" / "report.md").read_text()
    assert "perplexity" in text.lower() and "(%)" not in text
