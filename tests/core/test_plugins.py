"""Plug-ins from outside the package (compression.core.plugins): a criterion, a quantization
mode and a runtime defined in a temporary package outside compression/, used by train.py, a
sweep and analyze.py report with no file of the project edited."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from mlflow.tracking import MlflowClient
from onnx import numpy_helper
from plugin_source import PLUGIN
from shrink import FAST

from compression.config.run import RunConfig
from compression.core import plugins
from compression.core.errors import ConfigError
from compression.core.paths import PROJECT_ROOT
from compression.pruning.criteria import CRITERIA
from compression.quantization import QUANTIZERS
from compression.runtime import RUNTIMES

USE = ["plugins=[userpkg.plugin]", "pruning=unstructured", "pruning.sparsity=0.5",
       "pruning.criterion=row_normalized", "quantization.mode=pow2", "runtime.name=exported"]


def _package(root: Path, name: str = "userpkg") -> Path:
    pkg = root / name
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "plugin.py").write_text(PLUGIN)
    return root


def _env(root: Path, log: Path) -> dict[str, str]:
    path = os.pathsep.join([str(root), str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "PLUGIN_LOG": str(log)}


def _run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, *cmd], cwd=PROJECT_ROOT, env=env, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.fixture
def userpkg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The plug-in package importable in this process, forgotten afterwards."""
    root = _package(tmp_path / "outside")
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("PLUGIN_LOG", str(tmp_path / "used.log"))
    yield root
    sys.modules.pop("userpkg.plugin", None)
    sys.modules.pop("userpkg", None)
    CRITERIA.unregister("row_normalized")
    QUANTIZERS.unregister("pow2")
    RUNTIMES.unregister("exported")


def test_the_configs_plugins_are_imported_before_their_names_are_checked(compose_cfg,
                                                                         userpkg) -> None:
    assert "pow2" not in QUANTIZERS
    rc = RunConfig.from_cfg(compose_cfg(*USE, "+quantization.min_exponent=-8",
                                        "objectives=[quant_sqnr_db_min,rt_accuracy]"))
    assert rc.plugins == ("userpkg.plugin",) and rc.params()["plugins"] == ["userpkg.plugin"]
    assert rc.quantization.min_exponent == -8 and "row_normalized" in CRITERIA
    # the plug-in's own checks answer in one line, like the built-ins'
    with pytest.raises(ConfigError, match=r"quantization\.min_exponent=5 is out of range"):
        RunConfig.from_cfg(compose_cfg(*USE, "+quantization.min_exponent=5"))
    with pytest.raises(ConfigError, match=r"runtime=exported runs fp32 programs"):
        from compression.run import pipeline
        pipeline.check(compose_cfg(*[o for o in USE if not o.startswith("quantization")],
                                   "quantization=dynamic_int8"))


def test_the_built_in_runtimes_convert_a_plugin_mode_by_its_form(compose_cfg, userpkg,
                                                                 monkeypatch) -> None:
    """No runtime knows pow2 by name: its declared form (float32) is what ORT converts, and
    the same mode declaring no form (opaque) is refused by ORT and ExecuTorch in one line."""
    from compression.quantization.base import OPAQUE
    from compression.run import pipeline

    base = [o for o in USE if not o.startswith("runtime")]
    pipeline.check(compose_cfg(*base, "runtime=onnxruntime"))  # exports the untrained model
    monkeypatch.setattr(QUANTIZERS["pow2"], "form", OPAQUE)
    for rt in ("onnxruntime", "executorch"):
        with pytest.raises(ConfigError) as e:
            pipeline.check(compose_cfg(*base, f"runtime={rt}"))
        assert f"runtime={rt} cannot run quantization.mode=pow2" in str(e.value)
        assert "allowed: " in str(e.value) and "\n" not in str(e.value)


def test_runs_without_plugins_log_the_params_they_always_did(compose_cfg) -> None:
    assert "plugins" not in RunConfig.from_cfg(compose_cfg()).params()


@pytest.mark.parametrize(("value", "needle"), [
    ("[not/a/module]", "plugins: 'not/a/module' is not a module import path"),
    ("[no_such_package.mod]", "plugins: cannot import no_such_package.mod (No module named"),
])
def test_a_bad_plugin_is_one_line(compose_cfg, value, needle) -> None:
    with pytest.raises(ConfigError) as e:
        RunConfig.from_cfg(compose_cfg(f"plugins={value}"))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_a_plugin_that_raises_on_import_is_named(compose_cfg, tmp_path, monkeypatch) -> None:
    (tmp_path / "broken_plugin.py").write_text("raise RuntimeError('oops')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="plugins: importing broken_plugin failed: "
                                          "RuntimeError: oops"):
        RunConfig.from_cfg(compose_cfg("plugins=[broken_plugin]"))


def test_installed_entry_points_are_loaded(tmp_path, monkeypatch) -> None:
    """A distribution on sys.path declaring the entry point (what `pip install` of the user's
    package writes): its module is imported and registers its entries."""
    root = _package(tmp_path, "epkg")
    info = root / "epkg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: epkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        f"[{plugins.ENTRY_POINT_GROUP}]\nmine = epkg.plugin\n")
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setattr(plugins, "_entry_points_loaded", False)
    try:
        assert plugins.load_entry_points() == ["epkg.plugin"]
        assert "pow2" in QUANTIZERS and "exported" in RUNTIMES and "row_normalized" in CRITERIA
    finally:
        for name in ("epkg.plugin", "epkg"):
            sys.modules.pop(name, None)
        CRITERIA.unregister("row_normalized")
        QUANTIZERS.unregister("pow2")
        RUNTIMES.unregister("exported")


def test_the_entry_point_prefilter_only_skips_what_cannot_declare_one(tmp_path) -> None:
    """The cheap scan that spares importlib.metadata on every config check: no distribution
    declaring the group -> skipped; one that does, or a zip on the path -> asked."""
    other = tmp_path / "site" / "other-1.0.dist-info"
    other.mkdir(parents=True)
    (other / "entry_points.txt").write_text("[console_scripts]\nother = other:main\n")
    assert not plugins._may_declare_group([str(tmp_path / "site"), str(tmp_path / "missing")])
    (other / "entry_points.txt").write_text(f"[{plugins.ENTRY_POINT_GROUP}]\nx = other.x\n")
    assert plugins._may_declare_group([str(tmp_path / "site")])
    (tmp_path / "lib.zip").write_bytes(b"PK")
    assert plugins._may_declare_group([str(tmp_path / "lib.zip")])


@pytest.mark.slow
def test_train_a_sweep_and_the_report_use_the_plugins(tmp_path) -> None:
    """End to end with no file of the project edited: a single run, a 2-trial Optuna sweep over
    the plug-in criterion's sparsity, and analyze.py report over the sweep."""
    root = _package(tmp_path / "outside")
    log = tmp_path / "used.log"
    env = _env(root, log)
    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = [*FAST, f"tracking.uri={db}", f"paths.cache={tmp_path / 'cache'}",
              f"paths.artifacts={tmp_path / 'artifacts'}", f"hydra.run.dir={tmp_path / 'run'}",
              f"hydra.sweep.dir={tmp_path / 'multirun'}"]
    _run(["train.py", *USE, *common], env)
    assert sorted(set(log.read_text().split())) == ["criterion", "quantization", "runtime"]
    client = MlflowClient(tracking_uri=db)
    [exp] = [client.get_experiment_by_name("compression")]
    [single] = client.search_runs([exp.experiment_id])
    p, m = single.data.params, single.data.metrics
    assert (p["pruning.criterion"], p["quantization.mode"], p["runtime.name"]) == (
        "row_normalized", "pow2", "exported")
    assert single.info.status == "FINISHED" and 0.45 < m["sparsity"] < 0.55
    assert m["quant_sqnr_db_min"] > 0 and m["rt_accuracy"] > 0.5
    assert abs(m["rt_accuracy"] - m["accuracy"]) < 1e-9  # the same fp32 model, run from .pt2
    [pt2] = (tmp_path / "artifacts").glob("*/model.pt2")
    assert m["rt_size_bytes"] == pt2.stat().st_size

    # a built-in runtime runs the plug-in mode by its form: ORT's file holds pow2's weights
    _run(["train.py", *USE[:-1], "runtime=onnxruntime", *common], env)
    [ort_run] = [r for r in client.search_runs([exp.experiment_id])
                 if r.data.params.get("runtime.name") == "onnxruntime"]
    assert abs(ort_run.data.metrics["rt_accuracy"] - ort_run.data.metrics["accuracy"]) <= 0.005
    [onnx_file] = (tmp_path / "artifacts").glob("*/model.onnx")
    weights = [numpy_helper.to_array(t) for t in onnx.load(str(onnx_file)).graph.initializer
               if t.name.endswith("weight")]
    nonzero = np.abs(np.concatenate([w.ravel() for w in weights]))
    nonzero = nonzero[nonzero > 0]
    assert len(weights) >= 2 and np.allclose(np.log2(nonzero), np.round(np.log2(nonzero)))

    _run(["train.py", "-m", *USE, *common, "hydra/sweeper=optuna",
          "hydra.sweeper.n_trials=2", f"hydra.sweeper.storage={tmp_path / 'o.journal'}",
          "pruning.sparsity=0.5,0.8"], env)
    children = [r for r in client.search_runs([exp.experiment_id])
                if r.data.tags.get("run_role") == "child"]
    assert len(children) == 2 and all(r.info.status == "FINISHED" for r in children)
    assert {r.data.params["quantization.mode"] for r in children} == {"pow2"}

    out = tmp_path / "report"
    _run(["analyze.py", "report", "--sweep", "latest", "--tracking-uri", db, "--out", str(out),
          "--formats", "png"], env)
    text = (out / "report.md").read_text()
    assert "pow2" in text and "row_normalized" in (out / "runs.csv").read_text()
