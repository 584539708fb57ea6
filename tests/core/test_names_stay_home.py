"""No pruning method, quantization mode or runtime is named outside its own module.

A registered name quoted elsewhere (`if mode == "lowbit"`, a per-mode table in a runtime) is
a special case that a plug-in cannot join: what the entry owns must come from the entry. The
test reads every module of compression/ (string literals in the AST, so comments and
docstrings may mention names freely) and fails on any quoted name outside the entry's home
(the modules of its handler and its config class).

KNOWN is the debt left today, each with why it is still there: the test also fails when one
is paid off, so the list only shrinks (delete the line).
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

from compression.core.paths import PROJECT_ROOT
from compression.core.registry import Entry
from compression.pruning import PRUNERS
from compression.quantization import QUANTIZERS
from compression.runtime import RUNTIMES

PACKAGE = PROJECT_ROOT / "compression"
# Names that are also plain words of other vocabularies: "none" (no method, no mode, the
# universal off value), "torch" (the eager runtime and the framework), "random" (the pruning
# method, Optuna's sampler, the k-means and criteria initialisations).
SHARED_WORDS = {"none", "torch", "random"}

KNOWN: dict[tuple[str, str], int] = {
    # per-mode conversions of each runtime: one table per runtime instead of each mode
    # declaring its conversion (or refusal) per runtime
    ("runtime/executorch.py", "dynamic_int8"): 2,
    ("runtime/executorch.py", "fp16"): 3,
    ("runtime/executorch.py", "qat_int8"): 1,
    ("runtime/executorch.py", "static_int8"): 1,
    ("runtime/onnxruntime.py", "dynamic_int8"): 1,
    ("runtime/ort_quant.py", "dynamic_int8"): 1,
    ("runtime/ort_quant.py", "fp16"): 1,
    ("runtime/ort_quant.py", "lowbit"): 1,
    ("runtime/ort_quant.py", "qat_int8"): 1,
    ("runtime/ort_quant.py", "static_int8"): 1,
    # the ONNX export and the MLflow model name the onnxruntime runtime as their consumer
    ("runtime/mlflow_model.py", "onnxruntime"): 1,
    ("runtime/onnx_export.py", "onnxruntime"): 1,
    # the report's run label reads logged params (runs of any version), not a live config
    ("analysis/derive.py", "lowbit"): 2,
    # SparseGPT's own patterns reuse the unstructured and N:M names (pruning.pattern)
    ("pruning/sparsegpt.py", "nm"): 4,
    ("pruning/sparsegpt.py", "unstructured"): 2,
}


def _home(entry: Entry) -> set[Path]:
    modules = {getattr(o, "__module__", "") for o in
               (entry.handler, type(entry.handler), entry.config_cls)}
    return {PROJECT_ROOT / (m.replace(".", "/") + ".py") for m in modules
            if m.startswith("compression.")}


def quoted_names_outside_home() -> Counter[tuple[str, str]]:
    homes: dict[str, set[Path]] = {}
    for registry in (PRUNERS, QUANTIZERS, RUNTIMES):
        for entry in registry.entries():
            if entry.name not in SHARED_WORDS:
                homes.setdefault(entry.name, set()).update(_home(entry))
    found: Counter[tuple[str, str]] = Counter()
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                    and node.value in homes and path not in homes[node.value]):
                found[(path.relative_to(PACKAGE).as_posix(), node.value)] += 1
    return found


def test_no_method_mode_or_runtime_name_outside_its_module() -> None:
    found = quoted_names_outside_home()
    new = {k: n for k, n in found.items() if n > KNOWN.get(k, 0)}
    assert not new, f"registered names quoted outside their own module (file, name): count {new}"
    paid = {k: n for k, n in KNOWN.items() if found.get(k, 0) < n}
    assert not paid, f"fewer quotes than KNOWN says (delete or lower these lines): {paid}"


def test_the_scan_finds_a_quoted_name() -> None:
    """The scan itself works: KNOWN's entries are found (it would pass vacuously otherwise)."""
    found = quoted_names_outside_home()
    assert found[("runtime/ort_quant.py", "lowbit")] == 1
