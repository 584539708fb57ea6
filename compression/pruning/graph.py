"""Channel dependency groups from a torch.fx trace: which channels must be removed together.

Every tensor in the traced graph is tagged with the "channel space" of its dim 1 (Conv: channels
of (B, C, H, W); Linear: features of (B, F)). A Conv/Linear output starts a new space; ops that
keep channels aligned (activations, pooling, dropout, BatchNorm) pass it on; an elementwise op on
two tensors (the residual add) merges both operands' spaces into one - the coupled channels of a
ResNet. Flatten of (B, C, H, W) keeps the space with a repeat of H*W: channel c becomes the
columns c*H*W .. c*H*W + H*W - 1 of the next Linear.

A depthwise conv (groups = in = out channels) computes output channel c from input channel c
alone: its output is the input's space, and the conv a member of the group like a BatchNorm (its
rows, bias and channel count shrink together). Other grouped convs keep their channels: their
input and output spaces are frozen. torch.cat along the channels makes a tensor of several
spaces, each at its offset in the index range; every op after it (BatchNorm, flatten, a
consumer's columns) records the part of each space at that part's offset.

A group is one merged space: its producers (whose weight rows are the channels), consumers (whose
weight columns are), BatchNorms (whose entries are) and depthwise convs. Spaces reaching the
model input or output are `frozen` (their size is part of the model's interface). A space that
reaches any op not listed here is `blocked`: removing its channels cannot be proven safe, and
structured pruning refuses it, naming the layer and the op.

The walk itself is graph_trace.py, the groups it builds graph_groups.py, the torch ops it knows
graph_ops.py; this module is the entry point structured pruning and surgery call.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from compression.core.errors import ConfigError
from compression.core.lazy import fx, nn, torch
from compression.pruning import graph_ops
from compression.pruning.graph_groups import INTERFACE, Group, Part, Ref, Space
from compression.pruning.graph_ops import CHANNELWISE_METHODS, ELEMENTWISE_METHODS, SHAPE_METHODS
from compression.pruning.graph_trace import Tracer

__all__ = ["CHANNELWISE_METHODS", "ELEMENTWISE_METHODS", "INTERFACE", "SHAPE_METHODS", "Group",
           "Part", "Ref", "channel_groups", "conv_bn_pairs", "trace"]


def __getattr__(name: str) -> Any:
    """The torch tables (PRODUCERS, NORMS, ...) that graph_ops makes on the first trace, still
    readable here, where they lived before the tracer was split out."""
    if name in graph_ops.TABLES:
        graph_ops.load_tables()
        return getattr(graph_ops, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def trace(model: nn.Module, example: torch.Tensor) -> fx.GraphModule:
    from torch.fx.passes.shape_prop import ShapeProp

    graph_ops.load_tables()
    try:
        gm = fx.symbolic_trace(model)
    except Exception as e:  # dynamic control flow, unsupported Python in forward, ...
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"pruning.method=structured needs a model torch.fx can trace: {msg}"
                          ) from None
    was_training = model.training
    model.eval()  # shape propagation must not touch BN statistics
    with torch.no_grad():
        ShapeProp(gm).propagate(example)
    model.train(was_training)
    return gm


def channel_groups(model: nn.Module, example: torch.Tensor) -> list[Group]:
    """The dependency groups of `model` that have producers, in graph order (`example` is one
    input batch, e.g. (1, C, H, W))."""
    gm = trace(model, example)
    tracer = Tracer(gm)
    for node in gm.graph.nodes:
        tracer.visit(node)
    roots: dict[int, Space] = {}
    for space in tracer.spaces:
        roots.setdefault(id(space.root()), space.root())
    return [s.group for s in roots.values() if s.group.producers]


def conv_bn_pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[str, str]]:
    """(producer, BatchNorm) pairs a BatchNorm can be folded into: the BatchNorm's only input is
    the output of a Conv (or Linear into BatchNorm1d) called once, which feeds nothing else."""
    gm = trace(model, example)
    modules = dict(gm.named_modules())
    calls = Counter(str(n.target) for n in gm.graph.nodes if n.op == "call_module")
    pairs = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], graph_ops.NORMS):
            continue
        bn, src = modules[node.target], node.args[0]
        if not (isinstance(src, fx.Node) and src.op == "call_module" and len(src.users) == 1):
            continue
        if not (isinstance(modules[src.target], graph_ops.PRODUCERS) and bn.track_running_stats):
            continue
        if calls[str(src.target)] == 1 and calls[str(node.target)] == 1:
            pairs.append((str(src.target), str(node.target)))
    return pairs
