"""`train.py --help` and a bad value answer without importing torch or MLflow (seconds each):
checked by what the interpreter imported (-X importtime, sys.modules), not by a timing that
load can skew."""

from __future__ import annotations

import re
import subprocess
import sys

from compression.core.paths import PROJECT_ROOT


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



def test_a_bad_value_is_reported_without_importing_torch() -> None:
    top, proc = imported("pruning=unstructured", "pruning.sparsity=1.5", "tracking=off")
    assert proc.returncode == 2 and "pruning.sparsity=1.5 is out of range" in proc.stderr
    assert not {"torch", "numpy", "mlflow"} & top


CHECK_EVERY_CONFIG = """
import sys
from compression.config.run import RunConfig
from compression.core.errors import ConfigError
from compression.pruning import PRUNERS
from compression.quantization import QUANTIZERS
from compression.runtime import MODULES, RUNTIMES

checked = []
for registry, key in ((PRUNERS, "method"), (QUANTIZERS, "mode"), (RUNTIMES, "name")):
    for name in registry.names():  # every discovered module's dataclass, validated
        try:
            registry.build_config({key: name})
        except ConfigError:
            pass  # a method that needs a value of its own (a mask file): it was checked
        checked.append(name)
try:
    RunConfig.from_cfg({"pruning": {"method": "unstructured", "sparsity": 1.5}})
except ConfigError as e:
    print("refused:", e)
print("checked:", len(checked))
print("runtime modules:", len(MODULES))
print("heavy:", sorted({m.split(".")[0] for m in sys.modules} & HEAVY))
"""


def test_config_checks_import_no_torch() -> None:
    """Every pruning / quantization / runtime module is discovered and its dataclass validated,
    and a run config refused, with neither torch, numpy nor MLflow imported: a module added to
    compression/pruning, quantization or runtime that imports torch at its top level fails
    here (docs/extending.md: torch only inside functions, nn.Module classes in `_` helpers)."""
    code = CHECK_EVERY_CONFIG.replace("HEAVY", repr({"torch", "numpy", "mlflow", "optuna"}))
    proc = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "refused: pruning.sparsity=1.5 is out of range" in proc.stdout
    assert int(proc.stdout.split("checked: ")[1].split()[0]) >= 13
    assert int(proc.stdout.split("runtime modules: ")[1].split()[0]) >= 10  # all of runtime/
    assert "heavy: []" in proc.stdout, proc.stdout
