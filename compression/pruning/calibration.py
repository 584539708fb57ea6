"""Calibration statistics of a layer's inputs, gathered with forward hooks on a few training
batches (the pipeline's `Session.calibration_batches`): the per-input-feature squared L2 norm
(Wanda) and the Gram matrix H = X X^T of the inputs (SparseGPT).

A Linear's input (..., in) is flattened to rows of `in` features (a ViT's tokens are rows too);
a Conv2d's input is unfolded into its kernel-sized patches, so a feature is one (channel, ky, kx)
column of the flattened weight (out, in * kh * kw), the layout SparseGPT's reconstruction needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

from compression.core.errors import ConfigError
from compression.core.lazy import F, nn, no_grad, torch

SUPPORTED = ("Linear", "Conv2d")  # torch.nn class names (torch is imported on first use)


def supported(m: nn.Module) -> bool:
    return any(isinstance(m, getattr(nn, kind)) for kind in SUPPORTED)


def input_rows(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A layer's input as (samples, features), features in the order of weight.flatten(1)."""
    if isinstance(m, nn.Linear):
        return x.reshape(-1, x.shape[-1])
    if isinstance(m, nn.Conv2d) and m.groups == 1 and isinstance(m.padding, tuple):
        cols = F.unfold(x, m.kernel_size, dilation=m.dilation, padding=m.padding,
                        stride=m.stride)  # (B, C*kh*kw, L)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    raise ConfigError(f"calibration statistics support Linear and Conv2d (groups=1, numeric "
                      f"padding) layers, not {type(m).__name__}; exclude it (pruning.exclude)")


@contextmanager
def observing(layers: dict[str, nn.Module], fn: Callable[[str, torch.Tensor], None]
              ) -> Iterator[None]:
    """Call fn(name, rows) with each layer's input rows on every forward while open."""
    handles = [m.register_forward_pre_hook(
        lambda mod, args, name=name: fn(name, input_rows(mod, args[0].detach().float())))
        for name, m in layers.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


class _Seen(Exception):
    """Raised by a hook that has what it needs: the rest of that forward is skipped."""


@no_grad
def run_batches(model: nn.Module, batches: list[torch.Tensor]) -> None:
    """Forward `batches` in eval mode (no dropout, BN statistics untouched)."""
    was_training = model.training
    model.eval()
    try:
        for x in batches:
            with suppress(_Seen):
                model(x)
    finally:
        model.train(was_training)


def shared_inputs(model: nn.Module, layers: dict[str, nn.Module], batch: torch.Tensor
                  ) -> list[list[str]]:
    """`layers` in order, runs of consecutive layers fed the very same tensor merged (a
    transformer's q, k and v): pruning one of them cannot change the others' inputs."""
    seen: dict[str, torch.Tensor] = {}
    handles = [m.register_forward_pre_hook(
        lambda mod, args, name=name: seen.setdefault(name, args[0])) for name, m in layers.items()]
    try:
        run_batches(model, [batch])
    finally:
        for h in handles:
            h.remove()
    runs: list[list[str]] = []
    for name in layers:
        if runs and name in seen and seen.get(runs[-1][-1]) is seen[name]:
            runs[-1].append(name)
        else:
            runs.append([name])
    return runs


def input_norms(model: nn.Module, layers: dict[str, nn.Module], batches: list[torch.Tensor]
                ) -> dict[str, torch.Tensor]:
    """||X_j||_2 per input feature j of every layer, over all calibration rows: (in * k...,)."""
    sq: dict[str, torch.Tensor] = {}

    def add(name: str, rows: torch.Tensor) -> None:
        s = rows.square().sum(0)
        sq[name] = sq[name] + s if name in sq else s

    with observing(layers, add):
        run_batches(model, batches)
    return {n: s.sqrt() for n, s in sq.items()}


def gram(model: nn.Module, name: str, layer: nn.Module, batches: list[torch.Tensor]
         ) -> tuple[torch.Tensor, int]:
    """(H = sum over rows of x x^T in float64, number of rows) for one layer's inputs, seen
    through the model as it is now (earlier layers already pruned, as SparseGPT does)."""
    acc: dict[str, torch.Tensor] = {}
    count = [0]

    def add(_: str, rows: torch.Tensor) -> None:
        r = rows.double()
        acc["h"] = acc["h"] + r.T @ r if "h" in acc else r.T @ r
        count[0] += rows.shape[0]
        raise _Seen  # later layers are not needed for this one

    with observing({name: layer}, add):
        run_batches(model, batches)
    if "h" not in acc:
        raise ConfigError(f"layer {name!r} is not called in the model's forward; calibration "
                          "statistics need it to see inputs (exclude it: pruning.exclude)")
    return acc["h"], count[0]
