"""What the channel tracer (graph_trace.py) knows about torch: the layers, functions and tensor
methods that keep channels aligned, merge them, or make new ones. The tables of torch objects are
made on the first trace (`load_tables`), so that discovering the pruning package - a config
check - imports no torch; extending the tracer to a new op starts here."""

from __future__ import annotations

import operator

from compression.core.lazy import F, nn, torch

CHANNELWISE_METHODS = {"relu", "relu_", "sigmoid", "tanh", "contiguous", "clone", "detach"}
ELEMENTWISE_METHODS = {"add", "add_", "sub", "mul", "mul_"}
SHAPE_METHODS = {"size", "dim"}  # return plain ints, no tensor flows through
# The module globals `load_tables` makes (torch objects, so not made at import time).
TABLES = ("PRODUCERS", "NORMS", "CHANNELWISE_MODULES", "CHANNELWISE_FUNCTIONS",
          "ELEMENTWISE_FUNCTIONS", "CAT_FUNCTIONS")


def load_tables() -> None:
    """The torch layers and functions the tracer knows, made on the first trace: torch is
    imported then, not when the pruning package is discovered (a config check needs no torch)."""
    global PRODUCERS, NORMS, CHANNELWISE_MODULES, CHANNELWISE_FUNCTIONS, ELEMENTWISE_FUNCTIONS
    global CAT_FUNCTIONS
    if "CAT_FUNCTIONS" in globals():
        return
    PRODUCERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
    NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
    CHANNELWISE_MODULES = (
        nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.ELU, nn.Tanh, nn.Sigmoid,
        nn.Hardswish, nn.Hardtanh, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity,
        nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
        nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
        nn.AdaptiveMaxPool2d,
    )
    CHANNELWISE_FUNCTIONS = {
        F.relu, torch.relu, F.relu6, F.leaky_relu, F.gelu, F.silu, F.elu, torch.tanh,
        torch.sigmoid, F.hardswish, F.dropout, F.max_pool1d, F.max_pool2d, F.avg_pool1d,
        F.avg_pool2d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d,
    }
    ELEMENTWISE_FUNCTIONS = {operator.add, operator.iadd, operator.sub, operator.mul,
                             operator.imul, torch.add, torch.sub, torch.mul}
    CAT_FUNCTIONS = {torch.cat, torch.concat, torch.concatenate}
