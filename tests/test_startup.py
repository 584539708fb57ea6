"""`train.py --help` and a bad value answer without importing torch or MLflow (seconds each):
checked by what the interpreter imported (-X importtime), not by a timing that load can skew."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from compression.paths import PROJECT_ROOT


def imported(*args: str) -> tuple[set[str], subprocess.CompletedProcess]:
    proc = subprocess.run([sys.executable, "-X", "importtime", "train.py", *args],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    names = set(re.findall(r"^import time:.*\|\s*([\w.]+)$", proc.stderr, re.M))
    return {n.split(".")[0] for n in names}, proc


def test_help_imports_neither_torch_nor_mlflow() -> None:
    top, proc = imported("--help")
    assert proc.returncode == 0 and "pruning" in proc.stdout
    assert not {"torch", "mlflow", "optuna", "pandas"} & top


def test_a_bad_value_is_reported_without_importing_mlflow() -> None:
    top, proc = imported("pruning=unstructured", "pruning.sparsity=1.5", "tracking=off")
    assert proc.returncode == 2
    assert "error: pruning.sparsity=1.5 is out of range" in proc.stderr
    assert "mlflow" not in top and "optuna" not in top


@pytest.mark.xfail(strict=True, reason="the config dataclasses' modules still import torch "
                   "(docs/quality-core.md, Start-up); drop this marker when this passes")
def test_a_bad_value_is_reported_without_importing_torch() -> None:
    top, proc = imported("pruning=unstructured", "pruning.sparsity=1.5", "tracking=off")
    assert proc.returncode == 2 and "pruning.sparsity=1.5 is out of range" in proc.stderr
    assert "torch" not in top
