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
model input or
output are `frozen` (their size is part of the model's interface). A space that reaches any op
not listed here is `blocked`: removing its channels cannot be proven safe, and structured pruning
refuses it, naming the layer and the op.
"""

from __future__ import annotations

import math
import operator
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from compression.core.errors import ConfigError
from compression.core.lazy import F, fx, nn, torch

CHANNELWISE_METHODS = {"relu", "relu_", "sigmoid", "tanh", "contiguous", "clone", "detach"}
ELEMENTWISE_METHODS = {"add", "add_", "sub", "mul", "mul_"}
SHAPE_METHODS = {"size", "dim"}  # return plain ints, no tensor flows through


def _tables() -> None:
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


INTERFACE = ("the model input", "the model output")


@dataclass
class Group:
    """Where a set of coupled channels sits. Channel c of the group occupies, in a consumer's
    input columns or a BatchNorm's entries, indices offset + c * repeat + j for j < repeat
    (repeat > 1 after a flatten, offset > 0 behind a torch.cat)."""

    channels: int
    producers: list[str] = field(default_factory=list)
    consumers: list[tuple[str, int, int]] = field(default_factory=list)  # (layer, repeat, offset)
    norms: list[tuple[str, int, int]] = field(default_factory=list)  # (BatchNorm, repeat, offset)
    depthwise: list[tuple[str, int]] = field(default_factory=list)  # (depthwise conv, offset)
    frozen: str | None = None  # benign: channels are part of the model's interface
    blocked: str | None = None  # unsafe: channels reach an op structured pruning cannot handle

    @property
    def interface(self) -> bool:
        """The model's own input or output channels (not hidden ones)."""
        return self.frozen in INTERFACE

    @property
    def maskable(self) -> bool:
        """Its producers' channels may be zeroed: any group but the model's interface."""
        return self.frozen is None and bool(self.producers)

    @property
    def removable(self) -> bool:
        """Its channels may be sliced out of every layer they reach."""
        return self.maskable and self.blocked is None


class _Space:
    """Union-find node; the root of a set holds the merged Group."""

    def __init__(self, channels: int) -> None:
        self.parent: _Space = self
        self.group = Group(channels)

    def root(self) -> _Space:
        node = self
        while node.parent is not node:
            node.parent = node.parent.parent  # path halving
            node = node.parent
        return node


def _union(a: _Space, b: _Space, where: str) -> _Space:
    a, b = a.root(), b.root()
    if a is b:
        return a
    ga, gb = a.group, b.group
    if ga.channels != gb.channels:
        ga.blocked = ga.blocked or f"{where} (adds {ga.channels} to {gb.channels} channels)"
    b.parent = a
    ga.producers += gb.producers
    ga.consumers += gb.consumers
    ga.norms += gb.norms
    ga.depthwise += gb.depthwise
    ga.frozen = ga.frozen or gb.frozen
    ga.blocked = ga.blocked or gb.blocked
    return a


Part = tuple[_Space, int, int]  # a channel space, its repeat (after flatten) and offset
Ref = tuple[Part, ...]  # a tensor's dim 1: one part, or several after torch.cat


class _Tracer:
    def __init__(self, gm: fx.GraphModule) -> None:
        self.modules = dict(gm.named_modules())
        self.refs: dict[fx.Node, Ref] = {}
        self.called: dict[str, tuple[Part, Ref]] = {}  # module -> (input part, output ref)
        self.spaces: list[_Space] = []

    # -- helpers
    def new(self, channels: int, frozen: str | None = None) -> Ref:
        space = _Space(channels)
        space.group.frozen = frozen
        self.spaces.append(space)
        return ((space, 1, 0),)

    def groups_of(self, node: fx.Node) -> list[Group]:
        return [space.root().group for space, _, _ in self.refs[node]]

    def shape(self, node: Any) -> tuple[int, ...] | None:
        meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
        return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None

    def tensor_args(self, node: fx.Node) -> list[fx.Node]:
        return [a for a in node.all_input_nodes if a in self.refs]

    def block(self, node: fx.Node, why: str) -> None:
        for arg in self.tensor_args(node):
            for group in self.groups_of(arg):
                group.blocked = group.blocked or why
        shape = self.shape(node)
        if shape is not None:
            self.refs[node] = self.new(shape[1] if len(shape) > 1 else 1, frozen=why)

    def passthrough(self, node: fx.Node) -> None:
        self.refs[node] = self.refs[node.all_input_nodes[0]]

    # -- node kinds
    def visit(self, node: fx.Node) -> None:
        shape = self.shape(node)
        if node.op == "placeholder":
            if shape is not None:
                self.refs[node] = self.new(shape[1] if len(shape) > 1 else 1, "the model input")
        elif node.op == "get_attr":
            if shape is not None:
                self.refs[node] = self.new(shape[1] if len(shape) > 1 else 1, "a model constant")
        elif node.op == "output":
            for arg in self.tensor_args(node):
                for group in self.groups_of(arg):
                    group.frozen = "the model output"
        elif not self.tensor_args(node):
            if shape is not None:  # e.g. torch.zeros(...): a new constant tensor
                self.refs[node] = self.new(shape[1] if len(shape) > 1 else 1, "a constant")
        elif node.op == "call_module":
            self.visit_module(node, self.modules[node.target])
        elif node.op == "call_function":
            self.visit_function(node)
        elif node.op == "call_method":
            self.visit_method(node)

    def visit_module(self, node: fx.Node, m: nn.Module) -> None:
        name = str(node.target)
        where = f"module {name!r} ({type(m).__name__})"
        if isinstance(m, PRODUCERS):
            self.visit_producer(node, name, m, where)
        elif isinstance(m, NORMS):
            for space, repeat, offset in self.refs[node.args[0]]:
                space.root().group.norms.append((name, repeat, offset))
            self.passthrough(node)
        elif isinstance(m, CHANNELWISE_MODULES):
            self.passthrough(node)
        elif isinstance(m, nn.Flatten):
            self.flatten(node, m.start_dim, m.end_dim, where)
        else:
            self.block(node, where)

    def visit_producer(self, node: fx.Node, name: str, m: nn.Module, where: str) -> None:
        x = node.args[0]
        in_shape = self.shape(x)
        ref = self.refs[x]
        if isinstance(m, nn.Linear) and (in_shape is None or len(in_shape) != 2):
            return self.block(node, f"{where} applied to a rank-{len(in_shape or ())} tensor")
        if not isinstance(m, nn.Linear) and m.groups != 1:
            return self.grouped(node, name, m, ref, where)
        if name in self.called:  # a shared layer: both inputs and both outputs are coupled
            prev, out = self.called[name]
            if len(ref) != 1 or prev[1:] != ref[0][1:]:
                return self.block(node, f"{where} called on differently shaped inputs")
            _union(prev[0], ref[0][0], where)
            self.refs[node] = out
            return None
        for space, repeat, offset in ref:
            space.root().group.consumers.append((name, repeat, offset))
        out = self.new(m.weight.shape[0])
        out[0][0].group.producers.append(name)
        self.refs[node] = out
        self.called[name] = (ref[0] if len(ref) == 1 else (ref[0][0], -1, -1), out)
        return None

    def grouped(self, node: fx.Node, name: str, m: nn.Module, ref: Ref, where: str) -> None:
        """A depthwise conv passes its input's channels through (and joins their group); other
        grouped convs (each output channel reads a block of inputs) keep their channels."""
        depthwise = m.groups == m.in_channels == m.out_channels
        if depthwise and name not in self.called and all(r == 1 for _, r, _ in ref):
            for space, _, offset in ref:
                space.root().group.depthwise.append((name, offset))
            self.refs[node] = ref
            self.called[name] = (ref[0], ref)
            return None
        if name in self.called:
            return self.block(node, f"{where} with groups={m.groups} called twice")
        why = f"{where} with groups={m.groups}"
        for group in self.groups_of(node.args[0]):
            group.frozen = group.frozen or why
        out = self.new(m.weight.shape[0], frozen=why)
        out[0][0].group.producers.append(name)
        self.refs[node] = out
        self.called[name] = (ref[0], out)
        return None

    def visit_function(self, node: fx.Node) -> None:
        fn = node.target
        if fn in CHANNELWISE_FUNCTIONS:
            self.passthrough(node)
        elif fn in ELEMENTWISE_FUNCTIONS:
            self.elementwise(node, getattr(fn, "__name__", str(fn)))
        elif fn in CAT_FUNCTIONS:
            self.cat(node)
        elif fn is torch.flatten:
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
            self.flatten(node, start, end, "torch.flatten")
        else:
            self.block(node, f"function {getattr(fn, '__name__', fn)} (node {node.name})")

    def visit_method(self, node: fx.Node) -> None:
        method = str(node.target)
        if method in SHAPE_METHODS:
            return None
        if method in CHANNELWISE_METHODS:
            self.passthrough(node)
        elif method in ELEMENTWISE_METHODS:
            self.elementwise(node, f".{method}()")
        elif method == "flatten":
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            self.flatten(node, start, -1, ".flatten()")
        elif method in ("view", "reshape") and len(node.args) == 3 and node.args[2] == -1:
            self.flatten(node, 1, -1, f".{method}(batch, -1)")  # (B, ...) -> (B, -1)
        else:
            self.block(node, f"method .{method}() (node {node.name})")
        return None

    def elementwise(self, node: fx.Node, op: str) -> None:
        tensors = self.tensor_args(node)
        if len(tensors) == 1:  # tensor with a scalar
            self.refs[node] = self.refs[tensors[0]]
            return
        shapes = {self.shape(t) for t in tensors}
        layouts = {tuple((r, o) for _, r, o in self.refs[t]) for t in tensors}
        if len(shapes) != 1:
            return self.block(node, f"{op} with broadcasting (node {node.name})")
        if len(layouts) != 1:
            return self.block(node, f"{op} of differently concatenated tensors (node {node.name})")
        parts = list(self.refs[tensors[0]])
        for t in tensors[1:]:
            parts = [(_union(a[0], b[0], f"{op} (node {node.name})"), a[1], a[2])
                     for a, b in zip(parts, self.refs[t], strict=True)]
        self.refs[node] = tuple(parts)
        return None

    def cat(self, node: fx.Node) -> None:
        """torch.cat along dim 1: the parts of each input, shifted past the inputs before it."""
        tensors = node.args[0] if node.args else node.kwargs.get("tensors")
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        shape = self.shape(node)
        if not isinstance(tensors, list | tuple) or shape is None or dim % len(shape) != 1 \
                or not all(isinstance(t, fx.Node) and t in self.refs for t in tensors):
            return self.block(node, f"function cat other than along dim 1 (node {node.name})")
        parts, start = [], 0
        for t in tensors:
            parts += [(space, r, o + start) for space, r, o in self.refs[t]]
            start += self.shape(t)[1]  # type: ignore[index]
        self.refs[node] = tuple(parts)
        return None

    def flatten(self, node: fx.Node, start: int, end: int, where: str) -> None:
        x = node.all_input_nodes[0]
        shape = self.shape(x)
        if shape is None or start != 1 or end not in (-1, len(shape) - 1):
            return self.block(node, f"{where} other than flatten(start_dim=1) (node {node.name})")
        k = math.prod(shape[2:])
        self.refs[node] = tuple((space, r * k, o * k) for space, r, o in self.refs[x])
        return None


def trace(model: nn.Module, example: torch.Tensor) -> fx.GraphModule:
    from torch.fx.passes.shape_prop import ShapeProp

    _tables()
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
    tracer = _Tracer(gm)
    for node in gm.graph.nodes:
        tracer.visit(node)
    roots: dict[int, _Space] = {}
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
        if node.op != "call_module" or not isinstance(modules[node.target], NORMS):
            continue
        bn, src = modules[node.target], node.args[0]
        if not (isinstance(src, fx.Node) and src.op == "call_module" and len(src.users) == 1):
            continue
        if not (isinstance(modules[src.target], PRODUCERS) and bn.track_running_stats):
            continue
        if calls[str(src.target)] == 1 and calls[str(node.target)] == 1:
            pairs.append((str(src.target), str(node.target)))
    return pairs
