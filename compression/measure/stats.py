"""Counts from the model itself: parameters and zeros per layer (actual zeros), bytes in
memory, stored bits per weight, all-zero rows, sparsity and FLOPs (dense and effective)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

from compression.core.lazy import is_traceable_wrapper_subclass, nn, nn_kinds, torch
from compression.models.config import PRUNABLE_KIND_NAMES, prunable_layers

# Modules that stand in for a prunable layer after a later stage (a packed low-bit layer, a Linear
# run by a sparse kernel): each such class registers itself with @stands_in_for_prunable.
STAND_INS: list[type[nn.Module]] = []
M_ = TypeVar("M_", bound=type)


def stands_in_for_prunable(cls: M_) -> M_:
    """Class decorator: `cls` holds a pruned layer's weight (sparsity and FLOPs count it)."""
    STAND_INS.append(cls)
    return cls


def prunable_classes() -> tuple[type, ...]:
    """The prunable layer kinds (model_config.PRUNABLE_KIND_NAMES), their torch.ao quantized
    twins of the same name, and the registered stand-ins; subclasses (fused Conv+ReLU, QAT,
    dynamic int8 Linear) are prunable with their base."""
    import torch.ao.nn.quantized as nnq

    twins = tuple(getattr(nnq, k) for k in PRUNABLE_KIND_NAMES if hasattr(nnq, k))
    return (*nn_kinds(PRUNABLE_KIND_NAMES), *twins, *STAND_INS)


def prunable_type_names() -> frozenset[str]:
    """Class names of every prunable class and subclass defined so far."""
    names, todo = set(), list(prunable_classes())
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo += cls.__subclasses__()
    return frozenset(names)


class _PrunableTypes:
    """`name in PRUNABLE_TYPES`, for callers that only have a layer's class name."""

    def __contains__(self, name: object) -> bool:
        return name in prunable_type_names()


PRUNABLE_TYPES = _PrunableTypes()


def _tensor(value: object) -> torch.Tensor | None:
    """A module's weight/bias as a float tensor, whether a Parameter or a quantized accessor."""
    if callable(value) and not isinstance(value, torch.Tensor):
        value = value()  # quantized modules expose weight() / bias() methods
    if not isinstance(value, torch.Tensor):
        return None
    if value.is_quantized or is_traceable_wrapper_subclass(value):  # torch.ao / torchao int8
        return value.dequantize()
    return value.detach()


def stored_weight_bits(m: nn.Module) -> int | None:
    """Bits each weight of layer `m` is stored in: what a layer that packs its weight reports
    (`stored_weight_bits()`, read off its packed buffer), else the weight tensor's element width
    (fp32 32, fp16 16, torch.ao int8 8); None when neither tells (a stand-in that computes its
    weight from codes, e.g. k-means shared weights, or a torchao tensor subclass)."""
    own = getattr(m, "stored_weight_bits", None)
    if callable(own):
        return int(own())
    w = getattr(m, "weight", None)
    if callable(w) and not isinstance(w, torch.Tensor):
        if isinstance(m, tuple(STAND_INS)):
            return None
        w = w()  # torch.ao's quantized layers: weight() is the stored int8 tensor
    if not isinstance(w, torch.Tensor) or is_traceable_wrapper_subclass(w):
        return None
    return w.element_size() * 8


def weight_bits(model: nn.Module) -> tuple[float | None, dict[str, int | None]]:
    """(average stored bits per weight over the prunable layers, weighted by their sizes, or None
    when some layer's width cannot be told; each layer's bits)."""
    per_layer: dict[str, int | None] = {}
    numel: dict[str, int] = {}
    for name, m in model.named_modules():
        if isinstance(m, prunable_classes()):
            w = _tensor(getattr(m, "weight", None))
            if w is not None:
                per_layer[name], numel[name] = stored_weight_bits(m), w.numel()
    if not per_layer or any(b is None for b in per_layer.values()):
        return None, per_layer
    total = sum(numel.values())
    return sum(numel[n] * b for n, b in per_layer.items() if b is not None) / total, per_layer


def dense_weight(module: nn.Module) -> torch.Tensor | None:
    """A module's weight as a plain float tensor, whatever holds it (a Parameter, torch.ao's
    weight() method, a torchao tensor subclass, a SparseLinear's CSR form); None without one."""
    w = _tensor(getattr(module, "weight", None))
    return None if w is None else w.float()


@dataclass
class LayerStats:
    name: str
    type: str
    params: int  # weight + bias elements
    weight_numel: int
    weight_zeros: int  # exact zeros in the weight (what pruning produces)
    nonzero_params: int
    bytes: int  # in-memory bytes of the layer's weight and bias at their storage width
    extra: dict[str, float] = field(default_factory=dict)  # e.g. artifact bytes, quant error
    prunable: bool = False  # a Linear/Conv in any of its forms (prunable_classes)


def _storage_bytes(value: object) -> int:
    if callable(value) and not isinstance(value, torch.Tensor):
        value = value()
    if is_traceable_wrapper_subclass(value):  # torchao: int8 data + scales, not the fp32 view
        names, _ = value.__tensor_flatten__()
        return sum(_storage_bytes(getattr(value, n)) for n in names)
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    return 0


def _layer_bytes(m: nn.Module) -> int:
    """Bytes the layer's weights take in memory. A layer whose weight is computed on the fly
    from tensors of its own (packed low-bit codes and scales) counts those tensors, not the
    fp32 weight it computes; torch.ao's quantized layers keep theirs in packed params and
    report the int8 weight itself."""
    weight = getattr(m, "weight", None)
    own = [*m.parameters(recurse=False), *m.buffers(recurse=False)]
    if callable(weight) and not isinstance(weight, torch.Tensor) and own:
        return sum(_storage_bytes(t) for t in own)
    return _storage_bytes(weight) + _storage_bytes(getattr(m, "bias", None))


def layer_stats(model: nn.Module) -> list[LayerStats]:
    """One row per module that owns a weight (Linear, Conv, BatchNorm, their quantized forms)."""
    rows = []
    kinds = prunable_classes()
    for name, m in model.named_modules():
        w = _tensor(getattr(m, "weight", None))
        if w is None:
            continue
        b = _tensor(getattr(m, "bias", None))
        zeros = int((w == 0).sum())
        b_nz = int((b != 0).sum()) if b is not None else 0
        rows.append(
            LayerStats(
                name=name,
                type=type(m).__name__,
                params=w.numel() + (b.numel() if b is not None else 0),
                weight_numel=w.numel(),
                weight_zeros=zeros,
                nonzero_params=w.numel() - zeros + b_nz,
                bytes=_layer_bytes(m),
                prunable=isinstance(m, kinds),
            )
        )
    return rows


def dead_rows(model: nn.Module) -> dict[str, tuple[int, int]]:
    """Per Linear/Conv layer: (all-zero weight rows, rows). An all-zero row is an output channel
    (neuron, filter) that unstructured pruning removed whole: it emits its bias alone, a
    constant, so its consumers learn nothing from it. A depthwise conv (one 3x3 filter of 9
    weights per channel) loses many at high sparsity."""
    out = {}
    for name, layer in prunable_layers(model).items():
        w = layer.weight.detach()
        out[name] = (int((w.reshape(w.shape[0], -1) == 0).all(1).sum()), w.shape[0])
    return out


def sparsity(rows: list[LayerStats]) -> float:
    """Fraction of exact zeros among prunable (Linear/Conv) weights."""
    total = sum(r.weight_numel for r in rows if r.prunable)
    return sum(r.weight_zeros for r in rows if r.prunable) / max(1, total)


# ---------------------------------------------------------------------------- FLOPs
def flops_per_layer(model: nn.Module, example: torch.Tensor) -> tuple[int, dict[str, int]]:
    """Forward FLOPs for one sample (total, and per prunable layer) via torch's FLOP counter,
    which counts matmuls and convolutions (2 FLOPs per multiply-accumulate)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(example)
    root = type(model).__name__
    counts = counter.get_flop_counts()
    per_layer = {}
    for name in prunable_layers(model):
        per_layer[name] = int(sum(counts.get(f"{root}.{name}", {}).values()))
    return int(counter.get_total_flops()), per_layer


def effective_flops(total: int, per_layer: dict[str, int], rows: list[LayerStats]) -> int:
    """FLOPs if multiplications by zero weights were skipped: each layer scaled by its density."""
    by_name = {r.name: r for r in rows}
    saved = 0.0
    for name, f in per_layer.items():
        r = by_name.get(name)
        if r is not None and r.weight_numel:
            saved += f * r.weight_zeros / r.weight_numel
    return round(total - saved)


# ---------------------------------------------------------------------------- time and memory
