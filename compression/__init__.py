"""Pruning and quantization sweeps for PyTorch models, tracked in MLflow."""

__version__ = "0.1.0"
