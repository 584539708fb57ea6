"""core.lazy.lazy_exports: the packages that re-export lazily (tracking, measure) still give
every name of their `__all__`, from the submodule that defines it, and a config check imports
none of those submodules."""

from __future__ import annotations

import subprocess
import sys

import pytest

from compression.core.paths import PROJECT_ROOT

PACKAGES = {"compression.tracking": ["experiments", "runs", "status", "store", "system"],
            "compression.measure": ["stats", "timing"]}


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_every_exported_name_resolves_to_its_definition(package) -> None:
    code = (f"import importlib, {package} as p\n"
            "for n in p.__all__:\n"
            "    v = getattr(p, n)\n"
            "    home = getattr(v, '__module__', None)\n"
            "    assert home is None or not home.startswith(p.__name__) or hasattr(\n"
            "        importlib.import_module(home), n), n\n"
            "print(len(p.__all__))")
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout) >= 20


def test_a_missing_name_is_an_attribute_error() -> None:
    import compression.tracking as tracking

    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        tracking.no_such_name  # noqa: B018


def test_a_config_check_imports_none_of_the_lazy_submodules() -> None:
    code = ("import sys, compression.config.run\n"
            f"lazy = {[f'{p}.{s}' for p, subs in PACKAGES.items() for s in subs]!r}\n"
            "print(sorted(m for m in lazy if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    # the store is the tracking section's own URI check; the rest wait for a run
    assert out.stdout.strip() == "['compression.tracking.store']"
