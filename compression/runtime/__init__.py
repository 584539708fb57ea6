"""Deployment runtimes. Importing this package registers every built-in runtime in RUNTIMES:
torch (eager, today's behaviour), onnxruntime and executorch (XNNPACK)."""

from __future__ import annotations

from compression.runtime import executorch, onnxruntime, torch_eager  # noqa: F401  (register)
from compression.runtime.base import (
    RT_METRICS,
    RUNTIMES,
    Deployed,
    DeployJob,
    OnnxConfig,
    OrtConfig,
    RuntimeConfig,
)

__all__ = ["RT_METRICS", "RUNTIMES", "DeployJob", "Deployed", "OnnxConfig", "OrtConfig",
           "RuntimeConfig"]
