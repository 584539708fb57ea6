"""The torch.ao.quantization backend (the deprecated torch.ao, which has the fastest int8 CPU
kernels in torch 2.13: fbgemm / oneDNN / QNNPACK), and the one namespace its users import as
`ao`: moving to another library is a change to this package.

Static and QAT int8 use FX graph mode (`prepare_fx` / `convert_fx`, here): it inserts the
quantize / dequantize steps and fuses Conv+BN+ReLU, Linear+ReLU (what the x86/fbgemm backend
wants) from the traced graph, so models need no QuantStub edits and residual adds work too.
`nn.Flatten` modules are traced as `torch.flatten`, which torch.ao runs on int8 tensors (the
module would cost a dequantize -> flatten -> quantize round trip).

The rest sits in its own module and is re-exported here: the engines and `engine="auto"`
(torch_ao_engine.py), dynamic int8 (torch_ao_dynamic.py), per-shape weight packing for oneDNN
(torch_ao_packing.py), qconfigs and observers (torch_ao_qconfig.py).
"""

from __future__ import annotations

import copy
import re
from typing import Any

from compression.core.lazy import nn, torch
from compression.quantization._engines import (  # noqa: F401 (ao.ENGINES, ... for its users)
    AUTO,
    AUTO_CANDIDATES,
    DEFAULT_ENGINE,
    DYNAMIC_LAYER_KINDS,
    ENGINES,
    OBSERVERS,
)
from compression.quantization.backends.torch_ao_dynamic import (  # noqa: F401 (re-exported)
    DYNAMIC_LAYER_TYPES,
    linear_relu_pairs,
    quantize_dynamic_int8,
)
from compression.quantization.backends.torch_ao_engine import (  # noqa: F401 (re-exported)
    auto_candidates,
    concrete_engine,
    engine_set,
    pick_engine,
    quiet,
    reduce_range,
    set_engine,
)
from compression.quantization.backends.torch_ao_packing import PerShapePacking
from compression.quantization.backends.torch_ao_qconfig import (  # noqa: F401 (re-exported)
    PercentileObserver,
    QConfig,
    ptq_qconfig,
    qat_qconfig,
)

with quiet():
    from torch.ao.quantization import QConfigMapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx, prepare_qat_fx


def flatten_as_function(model: nn.Module) -> nn.Module:
    """The traced model with every `nn.Flatten` module call replaced by `torch.flatten`:
    torch.ao's backends treat the function (not the module) as an op on int8 tensors, so the
    quantized graph keeps int8 through it instead of dequantize -> flatten -> quantize (lenet5:
    ~7% faster at batch 1, ~2% at 256). Parameter and buffer names are unchanged."""
    gm = torch.fx.symbolic_trace(model)
    modules = dict(gm.named_modules())
    changed = False
    for node in list(gm.graph.nodes):
        m = modules.get(str(node.target)) if node.op == "call_module" else None
        if isinstance(m, nn.Flatten) and len(node.args) == 1 and not node.kwargs:
            with gm.graph.inserting_after(node):
                new = gm.graph.call_function(torch.flatten, (node.args[0], m.start_dim,
                                                             m.end_dim))
            node.replace_all_uses_with(new)
            gm.graph.erase_node(node)
            changed = True
    if not changed:
        return model
    gm.graph.lint()
    gm.recompile()
    gm.delete_all_unused_submodules()
    return gm


def _mapping(qconfig: QConfig) -> QConfigMapping:
    """`qconfig` everywhere but on token lookups (model=charlm): its input holds byte values
    that `round().long().clamp()` turn into ids for an nn.Embedding; observing them (or an
    int8 embedding with this qconfig's scheme) fails, so they and the table stay fp32."""
    return (QConfigMapping().set_global(qconfig).set_object_type(nn.Embedding, None)
            .set_object_type("round", None).set_object_type("long", None)
            .set_object_type("clamp", None))


def prepare_static(model: nn.Module, qconfig: QConfig, example: torch.Tensor, engine: str
                   ) -> nn.Module:
    """Trace, fuse (Conv+BN folded in eval mode) and insert observers; `model` is consumed."""
    set_engine(engine)
    with quiet():
        return prepare_fx(flatten_as_function(model.eval()), _mapping(qconfig), (example,))


def prepare_qat(model: nn.Module, qconfig: QConfig, example: torch.Tensor, engine: str
                ) -> nn.Module:
    """Trace, fuse and insert fake quantization for training; `model` is consumed. Fused layers
    keep the name of their Linear/Conv and `.weight` stays the trained Parameter, so pruning
    masks keyed by layer name still apply."""
    set_engine(engine)
    with quiet():
        return prepare_qat_fx(flatten_as_function(model.train()), _mapping(qconfig),
                              (example,))


def convert(prepared: nn.Module, engine: str) -> nn.Module:
    """Observed / fake-quantized model -> real int8 kernels (BN folded into the conv).
    `prepared` is consumed (copy it to convert it twice)."""
    engine = concrete_engine(engine)
    set_engine(engine)
    with quiet():
        out = convert_fx(prepared.eval())
    if engine in ("x86", "onednn"):  # x86 runs convs on oneDNN where the CPU has VNNI
        PerShapePacking.install(out, engine)
    out._register_load_state_dict_pre_hook(_drop_removed_requant_qparams, with_module=True)
    return out


_QPARAMS = re.compile(r"\w+_(scale|zero_point)_\d+")


def _drop_removed_requant_qparams(module: nn.Module, state_dict: dict[str, Any], prefix: str,
                                  *args: Any) -> None:
    """Artifacts written before `flatten_as_function` hold the scale / zero point of the
    requantize that followed an nn.Flatten (e.g. `flatten_scale_0`); that step is gone from
    the graph, so its qparams are dropped instead of failing a strict load. Missing keys
    still fail."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        name = key[len(prefix):]
        if _QPARAMS.fullmatch(name) and not hasattr(module, name):
            del state_dict[key]


def convert_fastest(prepared: nn.Module, candidates: list[str], batches: list[torch.Tensor]
                    ) -> tuple[str, nn.Module, dict[str, float]]:
    """`engine=auto`: convert a copy of `prepared` with each candidate engine and keep the
    fastest on `batches` (pick_engine)."""
    return pick_engine(lambda e: convert(copy.deepcopy(prepared), e), candidates, batches)


def float_weights(prepared: nn.Module) -> dict[str, torch.Tensor]:
    """The fp32 weight each layer of a prepared model will be converted from (QAT Conv+BN
    folded, as `convert` will fold it): the reference for the quantization error."""
    out: dict[str, torch.Tensor] = {}
    for name, m in prepared.named_modules():
        if any(name.startswith(f"{done}.") for done in out):
            continue  # the Conv inside an already counted fused Conv+ReLU
        if hasattr(m, "weight_fake_quant"):  # QAT module: to_float() folds BN like convert
            with quiet(), torch.no_grad():
                m = m.to_float()
        if isinstance(m, nn.Sequential) and len(m):  # fused Linear/Conv + ReLU
            m = m[0]
        if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d):
            out[name] = m.weight.detach().clone()
    return out


def quantized_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Dequantized int8 weights of every quantized layer (their `weight()` accessor)."""
    out = {}
    for name, m in model.named_modules():
        w = getattr(m, "weight", None)
        if callable(w) and not isinstance(w, torch.Tensor):
            w = w()
            if isinstance(w, torch.Tensor) and w.is_quantized:
                out[name] = w.dequantize()
    return out
