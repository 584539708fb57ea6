"""The node-by-node walk of a traced model that builds the channel dependency groups (graph.py
explains the model of channel spaces; graph_ops.py lists the ops it follows). A tensor reaching
an op not handled here blocks its spaces: structured pruning then refuses them by name."""

from __future__ import annotations

import math
from typing import Any

from compression.core.lazy import fx, nn, torch
from compression.pruning import graph_ops as ops
from compression.pruning.graph_groups import Group, Part, Ref, Space, union


class Tracer:
    """Walks a shape-propagated fx graph node by node, tagging each tensor with the channel
    space(s) of its dim 1 (`refs`) and merging or blocking spaces as each op demands."""

    def __init__(self, gm: fx.GraphModule) -> None:
        self.modules = dict(gm.named_modules())
        self.refs: dict[fx.Node, Ref] = {}
        self.called: dict[str, tuple[Part, Ref]] = {}  # module -> (input part, output ref)
        self.spaces: list[Space] = []

    # -- helpers
    def new(self, channels: int, frozen: str | None = None) -> Ref:
        space = Space(channels)
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
        if isinstance(m, ops.PRODUCERS):
            self.visit_producer(node, name, m, where)
        elif isinstance(m, ops.NORMS):
            for space, repeat, offset in self.refs[node.args[0]]:
                space.root().group.norms.append((name, repeat, offset))
            self.passthrough(node)
        elif isinstance(m, ops.CHANNELWISE_MODULES):
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
            union(prev[0], ref[0][0], where)
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
        if fn in ops.CHANNELWISE_FUNCTIONS:
            self.passthrough(node)
        elif fn in ops.ELEMENTWISE_FUNCTIONS:
            self.elementwise(node, getattr(fn, "__name__", str(fn)))
        elif fn in ops.CAT_FUNCTIONS:
            self.cat(node)
        elif fn is torch.flatten:
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
            self.flatten(node, start, end, "torch.flatten")
        else:
            self.block(node, f"function {getattr(fn, '__name__', fn)} (node {node.name})")

    def visit_method(self, node: fx.Node) -> None:
        method = str(node.target)
        if method in ops.SHAPE_METHODS:
            return None
        if method in ops.CHANNELWISE_METHODS:
            self.passthrough(node)
        elif method in ops.ELEMENTWISE_METHODS:
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
            parts = [(union(a[0], b[0], f"{op} (node {node.name})"), a[1], a[2])
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
