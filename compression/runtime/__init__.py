"""Deployment runtimes. Importing this package registers every built-in runtime in RUNTIMES:
torch (eager, today's behaviour), onnxruntime and executorch (XNNPACK). Discovery is the one
rule of pruning/ and quantization/ (`registry.discover`): every public module is imported, so
a new runtime is its module; modules that need torch or numpy at import time (qdq/) are
subpackages or lazy (core.lazy), so this stays torch-free for config checks."""

from __future__ import annotations

from compression.core.registry import discover
from compression.runtime.base import (
    RT_METRICS,
    RUNTIMES,
    Deployed,
    DeployJob,
    OnnxConfig,
    OrtConfig,
    RuntimeConfig,
)

MODULES = discover(__name__, __path__)

__all__ = ["RT_METRICS", "RUNTIMES", "DeployJob", "Deployed", "OnnxConfig", "OrtConfig",
           "RuntimeConfig"]
