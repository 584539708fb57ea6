"""Pruning and quantization sweeps for PyTorch models, tracked in MLflow.

`from compression import compress, load` gives the Python API (compression.run.api), imported on
first use so that `import compression.<module>` stays light.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["compress", "load"]


def __getattr__(name: str) -> Any:
    if name in ("compress", "load"):
        from compression.run import api

        return getattr(api, name)
    raise AttributeError(f"module 'compression' has no attribute {name!r}")
