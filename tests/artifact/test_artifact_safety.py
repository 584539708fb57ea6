"""Loading a model file never runs code the file names, and a bad file is one readable line.

The crafted files below put `os.system` (and other callables) where a header names the model
factory; each test checks that the command did NOT run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from compression.artifact.format import load_artifact, rewrite_meta, save_artifact
from compression.core.errors import ArtifactError
from compression.core.paths import PROJECT_ROOT
from compression.data import DataSpec
from compression.models.build import ModelConfig, build_model
from compression.quantization import QUANTIZERS
from compression.run import pipeline

SPEC = DataSpec("digits", 1, 8, 10)
NONE = QUANTIZERS.build_config({"mode": "none"})
USER = ModelConfig.from_dict({"_target_": "compression.models.build.example_user_model",
                              "hidden": 8})
ROOT = PROJECT_ROOT


def _write(path: Path, cfg: ModelConfig) -> Path:
    torch.manual_seed(0)
    save_artifact(build_model(cfg, SPEC).eval(), path, model_cfg=cfg, spec=SPEC, quant_cfg=NONE)
    return path


def _tamper(path: Path, edit) -> Path:
    """Rewrite the artifact's header through `edit(meta)`, tensors kept as they are."""
    rewrite_meta(path, edit)
    return path


def _evil(marker: Path):
    def edit(meta: dict) -> None:
        meta["model"] = {"_target_": "os.system", "command": f"touch {marker}",
                         "name": "custom", "width": 1.0}
    return edit


def test_a_header_naming_os_system_is_refused_and_nothing_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = _tamper(_write(tmp_path / "m.safetensors", ModelConfig()), _evil(marker))
    with pytest.raises(ArtifactError, match="never calls code named by a file"):
        load_artifact(path)
    with pytest.raises(ArtifactError, match=r"'os\.system' but the caller named"):
        load_artifact(path, USER)  # the caller's own factory differs: refused as well
    assert not marker.exists()


def test_a_user_factory_loads_only_when_the_caller_names_it(tmp_path: Path) -> None:
    path = _write(tmp_path / "user.safetensors", USER)
    with pytest.raises(ArtifactError, match=r"pass model\._target_=compression\.models"):
        load_artifact(path)
    model, meta = load_artifact(path, USER)
    assert meta["model"]["hidden"] == 8
    bare = ModelConfig.from_dict({"_target_": USER.target})  # kwargs come from the file
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(model(x), load_artifact(path, bare)[0](x))
    other = ModelConfig.from_dict({"_target_": USER.target, "hidden": 16})
    with pytest.raises(ArtifactError, match="not with the caller's"):
        load_artifact(path, other)


def test_a_builtin_name_is_looked_up_never_resolved(tmp_path: Path) -> None:
    path = _write(tmp_path / "m.safetensors", ModelConfig())

    def rename(meta: dict) -> None:
        meta["model"] = {"name": "os.system", "width": 1.0}
    with pytest.raises(ArtifactError, match="not a built-in model"):
        load_artifact(_tamper(path, rename))


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["transforms"].append({"kind": "os.system"}), "unknown transform"),
    (lambda m: m["entries"]["fc1.weight"].update(kind="dtype", dtype="load"), "unknown dtype"),
    (lambda m: m.update(spec={"name": "x", "evil": 1}), "cannot be loaded"),
    (lambda m: m.update(format="other/9"), "unsupported artifact format"),
])
def test_tampered_headers_fail_in_one_line(tmp_path: Path, edit, message: str) -> None:
    path = _tamper(_write(tmp_path / "m.safetensors", ModelConfig()), edit)
    with pytest.raises(ArtifactError, match=message) as err:
        load_artifact(path)
    assert "\n" not in str(err.value)


def test_a_truncated_file_fails_in_one_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "m.safetensors", ModelConfig())
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ArtifactError, match="not a readable model file") as err:
        load_artifact(path)
    assert "\n" not in str(err.value)


def test_analyze_layers_refuses_a_crafted_run_artifact(compose_cfg, tracking_uri: str,
                                                       tmp_path: Path) -> None:
    """The issue's exploit end to end: a crafted model.safetensors attached to a run, then
    `analyze.py layers --run <id>` (and report) must not run the header's command."""
    pipeline.run(compose_cfg("pruning=unstructured", "pruning.sparsity=0.5"))
    client = MlflowClient(tracking_uri=tracking_uri)
    run = client.search_runs([client.get_experiment_by_name("compression").experiment_id])[0]
    marker = tmp_path / "pwned"
    crafted = tmp_path / "model.safetensors"
    _tamper(Path(client.download_artifacts(run.info.run_id, "model/model.safetensors",
                                           str(tmp_path))), _evil(marker)).rename(crafted)
    client.log_artifact(run.info.run_id, str(crafted), "model")  # replaces the run's file
    out = subprocess.run(
        [sys.executable, "analyze.py", "layers", "--experiment", "compression", "--run",
         run.info.run_id, "--tracking-uri", tracking_uri, "--out", str(tmp_path / "a"),
         "--no-log", "--formats", "png"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "never calls code named by a file" in last
    assert not marker.exists()
