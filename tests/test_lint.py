"""The codebase is ruff-clean and type-checks (part of the suite so CI enforces both)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from compression.core.paths import PROJECT_ROOT


def test_ruff_is_clean() -> None:
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.fail("ruff is not installed; run `bash .ci/install --dev`")
    out = subprocess.run([ruff, "check", "."], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:]


# Modules of compression/ with mypy errors when type checking was adopted: their errors are
# reported, not yet enforced. The list only shrinks: a new module with errors fails, and so
# does a listed module that has become clean (delete its line). compression/core/ is strict.
UNTYPED = {
    "analysis/plots/base.py",
    "analysis/plots/lines.py",
    "analysis/plots/ticks.py",
    "analysis/report/publish.py",
    "analysis/report/steps.py",
    "analysis/runs.py",
    "analysis/tables.py",
    "analysis/talk.py",
    "artifact/coding/positions.py",
    "artifact/entries.py",
    "artifact/format.py",
    "data/image_folder.py",
    "data/_mlflow_input.py",
    "measure/stats.py",
    "models/config.py",
    "pruning/base.py",
    "pruning/block.py",
    "pruning/graph.py",
    "pruning/graph_ops.py",
    "pruning/graph_trace.py",
    "pruning/heads.py",
    "pruning/lowrank.py",
    "pruning/masks.py",
    "pruning/nm.py",
    "pruning/schedules.py",
    "pruning/small_dense.py",
    "pruning/sparsegpt.py",
    "pruning/structured.py",
    "pruning/unstructured.py",
    "quantization/allocation.py",
    "quantization/backends/torch_ao_packing.py",
    "quantization/backends/torch_ao_qconfig.py",
    "quantization/cast.py",
    "quantization/dynamic.py",
    "quantization/kmeans.py",
    "quantization/lowbit.py",
    "quantization/lowbit_kernels.py",
    "quantization/qat.py",
    "quantization/static.py",
    "run/allocation.py",
    "run/measurement.py",
    "runtime/dynamic_twin.py",
    "runtime/executorch.py",
    "runtime/onnxruntime.py",
    "runtime/qdq/layers.py",
    "runtime/qdq/graph.py",
    "runtime/qdq/twin.py",
    "sweep/space.py",
    "sweep/study.py",
    "tracking/callbacks.py",
    "training/loop.py",
}


@pytest.mark.slow  # mypy reads torch's and MLflow's stubs: about a minute from a cold cache
def test_mypy_strict_on_core_and_no_new_errors_elsewhere() -> None:
    mypy = shutil.which("mypy")
    if mypy is None:
        pytest.fail("mypy is not installed; run `bash .ci/install --dev`")
    out = subprocess.run([mypy], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert "error:" in out.stdout or out.returncode == 0, out.stderr[-3000:]  # mypy itself ran
    with_errors = {line.split(":", 1)[0].removeprefix("compression/")
                   for line in out.stdout.splitlines() if ": error:" in line}
    new = sorted(with_errors - UNTYPED)
    assert not new, "\n".join(line for line in out.stdout.splitlines()
                               if line.split(":", 1)[0].removeprefix("compression/") in new)
    clean = sorted(UNTYPED - with_errors)
    assert not clean, f"now clean, delete from UNTYPED: {clean}"
