"""The codebase is ruff-clean (part of the suite so CI enforces it)."""

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
