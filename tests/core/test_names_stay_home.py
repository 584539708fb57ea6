"""No pruning method, quantization mode or runtime is named outside its own module.

A registered name quoted elsewhere (`if mode == "lowbit"`, a per-mode table in a runtime) is
a special case that a plug-in cannot join: what the entry owns must come from the entry. The
test reads every module of compression/ (string literals in the AST, so comments and
docstrings may mention names freely) and fails on any quoted name outside the entry's home
(the modules of its handler and its config class).

OTHER_VOCABULARY lists the quotes that are the same word in another vocabulary, not a use of
the entry, each with why; the test also fails when one goes away, so the list stays exact
(delete the line).
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

OTHER_VOCABULARY: dict[tuple[str, str], int] = {
    # the Python package onnxruntime (a pip pin of the logged MLflow model, a logger to quiet),
    # not the runtime entry
    ("runtime/mlflow_model.py", "onnxruntime"): 1,
    ("runtime/onnx_export.py", "onnxruntime"): 1,
    # SparseGPT's own pruning.pattern values (unstructured, nm), not the pruning methods
    ("pruning/sparsegpt.py", "nm"): 4,
    ("pruning/sparsegpt.py", "unstructured"): 2,
}


def _home(entry: Entry) -> set[Path]:
    modules = {getattr(o, "__module__", "") for o in
               (entry.handler, type(entry.handler), entry.config_cls)}
    return {PROJECT_ROOT / (m.replace(".", "/") + ".py") for m in modules
            if m.startswith("compression.")}


def quoted_names_outside_home(package: Path = PACKAGE) -> Counter[tuple[str, str]]:
    homes: dict[str, set[Path]] = {}
    for registry in (PRUNERS, QUANTIZERS, RUNTIMES):
        for entry in registry.entries():
            if entry.name not in SHARED_WORDS:
                homes.setdefault(entry.name, set()).update(_home(entry))
    found: Counter[tuple[str, str]] = Counter()
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                    and node.value in homes and path not in homes[node.value]):
                found[(path.relative_to(package).as_posix(), node.value)] += 1
    return found


def test_no_method_mode_or_runtime_name_outside_its_module() -> None:
    found = quoted_names_outside_home()
    new = {k: n for k, n in found.items() if n > OTHER_VOCABULARY.get(k, 0)}
    assert not new, f"registered names quoted outside their own module (file, name): count {new}"
    gone = {k: n for k, n in OTHER_VOCABULARY.items() if found.get(k, 0) < n}
    assert not gone, f"fewer quotes than OTHER_VOCABULARY says (delete these lines): {gone}"


def test_the_scan_finds_a_quoted_name(tmp_path) -> None:
    """The scan itself works (it would pass vacuously otherwise): the other-vocabulary quotes
    are found, and so is a mode quoted in a module that is not its home."""
    found = quoted_names_outside_home()
    assert found[("pruning/sparsegpt.py", "nm")] == 4
    (tmp_path / "runtime").mkdir()
    (tmp_path / "runtime" / "table.py").write_text('MODES = {"lowbit": 4, "qat_int8": 8}\n')
    assert quoted_names_outside_home(tmp_path) == {("runtime/table.py", "lowbit"): 1,
                                                   ("runtime/table.py", "qat_int8"): 1}
