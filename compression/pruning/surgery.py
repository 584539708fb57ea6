"""Physical channel removal: slice Conv/Linear/BatchNorm modules to kept indices, in place.

The same record drives the live model and the artifact loader: `remove_channels` returns
{"kind": "channels", "layers": {name: {"out" | "in" | "features": [kept indices]}}} and
`apply_channel_record` (registered as the loader's "channels" transform) slices a freshly built
model to those shapes before its weights are loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from compression.core.lazy import nn, no_grad, torch

if TYPE_CHECKING:
    from compression.pruning.graph import Group

KIND = "channels"
FOLD_KIND = "fold_bn"


def _param(t: torch.Tensor, idx: torch.Tensor, dim: int) -> nn.Parameter:
    return nn.Parameter(t.detach().index_select(dim, idx).clone(), requires_grad=t.requires_grad)


def _slice_layer(m: nn.Module, cut: dict[str, list[int]]) -> None:
    """Conv (out, in, *k) or Linear (out, in): rows = output channels, columns = inputs; a
    depthwise conv's "channels" are its rows, bias, inputs and groups at once."""
    if "channels" in cut:
        idx = torch.tensor(cut["channels"], dtype=torch.long)
        m.weight = _param(m.weight, idx, 0)
        if m.bias is not None:
            m.bias = _param(m.bias, idx, 0)
        m.in_channels = m.out_channels = m.groups = len(idx)
    if "out" in cut:
        idx = torch.tensor(cut["out"], dtype=torch.long)
        m.weight = _param(m.weight, idx, 0)
        if m.bias is not None:
            m.bias = _param(m.bias, idx, 0)
        setattr(m, "out_features" if isinstance(m, nn.Linear) else "out_channels", len(idx))
    if "in" in cut:
        idx = torch.tensor(cut["in"], dtype=torch.long)
        m.weight = _param(m.weight, idx, 1)
        setattr(m, "in_features" if isinstance(m, nn.Linear) else "in_channels", len(idx))


def _slice_norm(m: nn.Module, cut: dict[str, list[int]]) -> None:
    idx = torch.tensor(cut["features"], dtype=torch.long)
    if m.affine:
        m.weight, m.bias = _param(m.weight, idx, 0), _param(m.bias, idx, 0)
    if m.track_running_stats:
        m.running_mean = m.running_mean.index_select(0, idx).clone()
        m.running_var = m.running_var.index_select(0, idx).clone()
    m.num_features = len(idx)


SLICERS: dict[str, Callable[[nn.Module, dict[str, list[int]]], None]] = {  # torch.nn names
    "Linear": _slice_layer, "Conv1d": _slice_layer, "Conv2d": _slice_layer,
    "Conv3d": _slice_layer, "BatchNorm1d": _slice_norm, "BatchNorm2d": _slice_norm,
    "BatchNorm3d": _slice_norm,
}


def _expand(channels: list[int], repeat: int, offset: int = 0) -> list[int]:
    """Channels -> their indices in a consumer's columns or a norm's entries: channel c ->
    offset + c*r .. offset + c*r + r-1 (r > 1 after flatten, offset > 0 behind a cat)."""
    return [offset + c * repeat + j for c in channels for j in range(repeat)]


def _width(m: nn.Module, key: str) -> int:
    if key == "features":
        return int(m.num_features)
    return int(m.weight.shape[1] if key == "in" else m.weight.shape[0])


def channel_record(model: nn.Module, groups: list[Group], kept: dict[int, list[int]]
                   ) -> dict[str, Any]:
    """The transform removing every channel of `groups[i]` not in `kept[i]`. A consumer or
    norm behind a torch.cat takes channels of several groups: its kept indices are all of its
    indices but those any group drops."""
    layers: dict[str, dict[str, list[int]]] = {}
    dropped: dict[tuple[str, str], set[int]] = {}
    for i, keep in kept.items():
        g = groups[i]
        drop = sorted(set(range(g.channels)) - set(keep))
        for name in g.producers:
            layers.setdefault(name, {})["out"] = keep
        members = [("in", name, r, o) for name, r, o in g.consumers]
        members += [("features", name, r, o) for name, r, o in g.norms]
        members += [("channels", name, 1, o) for name, o in g.depthwise]
        for key, name, repeat, offset in members:
            dropped.setdefault((name, key), set()).update(_expand(drop, repeat, offset))
    for (name, key), gone in dropped.items():
        width = _width(model.get_submodule(name), key)
        layers.setdefault(name, {})[key] = [j for j in range(width) if j not in gone]
    return {"kind": KIND, "layers": layers}


def apply_channel_record(model: nn.Module, record: dict[str, Any]) -> nn.Module:
    for name, cut in record["layers"].items():
        m = model.get_submodule(name)
        slicer = next(fn for kind, fn in SLICERS.items() if isinstance(m, getattr(nn, kind)))
        slicer(m, cut)
    return model


def apply_fold_record(model: nn.Module, record: dict[str, Any]) -> nn.Module:
    """Structure of a folded model (values come from its state dict): bias on, BatchNorm gone."""
    for layer, norm in record["pairs"]:
        m = model.get_submodule(layer)
        if m.bias is None:
            m.bias = nn.Parameter(torch.zeros(m.weight.shape[0], dtype=m.weight.dtype))
        model.set_submodule(norm, nn.Identity())
    return model


@no_grad
def fold_batchnorm_(model: nn.Module, example: torch.Tensor) -> dict[str, Any]:
    """Fold every foldable BatchNorm (graph.conv_bn_pairs) into its producer, in place; returns
    the transform record. The model computes what it computed in eval mode."""
    from compression.pruning.graph import conv_bn_pairs  # torch.fx: on use

    pairs = conv_bn_pairs(model, example)
    for layer, norm in pairs:
        m, bn = model.get_submodule(layer), model.get_submodule(norm)
        scale = bn.running_var.add(bn.eps).rsqrt()  # (C,)
        if bn.affine:
            scale = scale * bn.weight
        bias = m.bias if m.bias is not None else torch.zeros_like(bn.running_mean)
        shift = (bias - bn.running_mean) * scale + (bn.bias if bn.affine else 0)
        m.weight = nn.Parameter(m.weight * scale.view(-1, *[1] * (m.weight.dim() - 1)),
                                requires_grad=m.weight.requires_grad)
        m.bias = nn.Parameter(shift.to(m.weight.dtype), requires_grad=m.weight.requires_grad)
        model.set_submodule(norm, nn.Identity())
    return {"kind": FOLD_KIND, "pairs": [list(p) for p in pairs]}
