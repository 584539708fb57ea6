"""The channel spaces the tracer (graph_trace.py) merges and the `Group` each merged space becomes:
a union-find over spaces whose root holds the group, and the `Part` / `Ref` shapes a traced
tensor's dim 1 is described by. Plain Python (no torch), the data half of graph.py's tracing."""

from __future__ import annotations

from dataclasses import dataclass, field

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


class Space:
    """Union-find node; the root of a set holds the merged Group."""

    def __init__(self, channels: int) -> None:
        self.parent: Space = self
        self.group = Group(channels)

    def root(self) -> Space:
        node = self
        while node.parent is not node:
            node.parent = node.parent.parent  # path halving
            node = node.parent
        return node


def union(a: Space, b: Space, where: str) -> Space:
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


Part = tuple[Space, int, int]  # a channel space, its repeat (after flatten) and offset
Ref = tuple[Part, ...]  # a tensor's dim 1: one part, or several after torch.cat
