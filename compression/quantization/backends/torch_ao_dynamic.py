"""Dynamic int8 with torch.ao: weights to int8, activations quantized on the fly per batch.
Linear+ReLU module pairs are fused first (one fused kernel, no separate fp32 ReLU pass)."""

from __future__ import annotations

from collections import Counter

from compression.core.lazy import nn, torch
from compression.quantization._engines import DYNAMIC_LAYER_KINDS
from compression.quantization.backends.torch_ao_engine import quiet, set_engine
from compression.quantization.backends.torch_ao_packing import PerShapePacking

with quiet():
    import torch.ao.nn.intrinsic as nni
    from torch.ao.quantization import fuse_modules

DYNAMIC_LAYER_TYPES: dict[str, type[nn.Module]] = {
    kind: getattr(nn, name) for kind, name in DYNAMIC_LAYER_KINDS.items()}


def linear_relu_pairs(model: nn.Module) -> list[list[str]]:
    """[linear, relu] module names where a Linear's only use is a ReLU module and neither module
    is called twice (fusing replaces the ReLU with Identity). [] if torch.fx cannot trace it."""
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # data-dependent control flow etc.: quantize without fusing
        return []
    modules = dict(model.named_modules())
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")

    def is_module(node: torch.fx.Node, kind: type[nn.Module]) -> bool:
        return (node.op == "call_module" and type(modules.get(str(node.target))) is kind
                and calls[node.target] == 1)

    return [[str(n.target), str(next(iter(n.users)).target)] for n in graph.nodes
            if is_module(n, nn.Linear) and len(n.users) == 1
            and is_module(next(iter(n.users)), nn.ReLU)]


def quantize_dynamic_int8(model: nn.Module, layers: list[str], engine: str) -> nn.Module:
    """Weights to int8 (per-tensor symmetric), activations quantized on the fly per batch.
    Linear+ReLU module pairs become torch.ao's fused dynamic LinearReLU (measured 4-6% faster
    on the mlp at batch 1 and 256; same outputs). `model` is consumed."""
    set_engine(engine)
    with quiet():
        from torch.ao.quantization import quantize_dynamic

        kinds: set[type[nn.Module]] = {DYNAMIC_LAYER_TYPES[k] for k in layers}
        if "linear" in layers:
            pairs = linear_relu_pairs(model.eval())
            if pairs:
                model = fuse_modules(model, pairs)
                kinds.add(nni.LinearReLU)
        out = quantize_dynamic(model, kinds, dtype=torch.qint8)
    if engine == "onednn":  # x86 and fbgemm run dynamic Linear on fbgemm: no shape cache
        PerShapePacking.install(out, engine)
    return out
