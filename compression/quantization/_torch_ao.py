"""The one module that touches `torch.ao.quantization` (deprecated, but it has the fastest int8 CPU
kernels in torch 2.13: fbgemm / oneDNN / QNNPACK). Moving to torchao is a change to this file.

Static and QAT int8 use FX graph mode (`prepare_fx` / `convert_fx`): it inserts the quantize /
dequantize steps and fuses Conv+BN+ReLU, Linear+ReLU (what the x86/fbgemm backend wants) from the
traced graph, so models need no QuantStub edits and residual adds work too. `nn.Flatten` modules
are traced as `torch.flatten`, which torch.ao runs on int8 tensors (the module would cost a
dequantize -> flatten -> quantize round trip). Dynamic int8 fuses Linear+ReLU module pairs first
(one fused kernel, no separate fp32 ReLU pass).

oneDNN's int8 kernels (engine onednn, and engine x86's convolutions on CPUs with AVX512-VNNI)
cache their primitive for the first input shape and thread count a packed weight sees; any other
shape takes a slower path for good (lenet5, batch 1 after an evaluation at batch 512: about 1.6x
slower). `PerShapePacking` keeps one packed copy of the weights per input shape instead.

`engine="auto"` times the candidate engines on the converted model (batch 1 and a calibration
batch) and keeps the fastest; see `pick_engine`.
"""

from __future__ import annotations

import copy
import re
import threading
import warnings
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
from compression.quantization.timing import time_candidates

DYNAMIC_LAYER_TYPES: dict[str, type[nn.Module]] = {
    kind: getattr(nn, name) for kind, name in DYNAMIC_LAYER_KINDS.items()}


@contextmanager
def _quiet() -> Iterator[None]:
    """torch.ao warns on every call that it is deprecated (and about observer defaults)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        yield


with _quiet():
    import torch.ao.nn.intrinsic as nni
    from torch.ao.quantization import QConfig, QConfigMapping, fuse_modules
    from torch.ao.quantization import observer as obs
    from torch.ao.quantization.fake_quantize import FakeQuantize
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx, prepare_qat_fx


def concrete_engine(engine: str) -> str:
    """The engine kernels run on: `auto` before a timed pick (e.g. a skeleton) is the default."""
    return DEFAULT_ENGINE if engine == AUTO else engine


def set_engine(engine: str) -> None:
    engine = concrete_engine(engine)
    if engine not in torch.backends.quantized.supported_engines:
        raise RuntimeError(
            f"quantization.engine={engine!r} is not supported by this torch build; "
            f"supported: {', '.join(torch.backends.quantized.supported_engines)}"
        )
    torch.backends.quantized.engine = engine


def reduce_range(engine: str) -> bool:
    """x86/fbgemm int8 GEMMs add pairs of u8*s8 products in int16 (vpmaddubsw) on CPUs without
    VNNI; 7-bit activations keep that from saturating. torch's default qconfigs do the same.
    `auto` calibrates for the strictest candidate (it may pick x86/fbgemm)."""
    return engine in ("x86", "fbgemm", AUTO)


def auto_candidates(symmetric_weights: bool = True) -> list[str]:
    """Engines `auto` times: this build's x86 engines (oneDNN needs symmetric weights)."""
    return [e for e in AUTO_CANDIDATES if e in torch.backends.quantized.supported_engines
            and (symmetric_weights or e != "onednn")]


# ---------------------------------------------------------------------------- dynamic
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
    with _quiet():
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


# ---------------------------------------------------------------------------- packing
def _packed_holder(m: nn.Module) -> Any:
    """The object whose `_packed_params` attribute is the packed weight (a ScriptObject) of a
    quantized Conv / Linear (static or dynamic), or None for other modules."""
    if not (callable(getattr(m, "_weight_bias", None)) and hasattr(m, "set_weight_bias")):
        return None
    holder = getattr(m, "_packed_params", None)
    if isinstance(holder, nn.Module):  # Linear: LinearPackedParams wraps the ScriptObject
        return holder if hasattr(holder, "_packed_params") else None
    return m if holder is not None else None


class PerShapePacking:
    """One packed copy of every int8 weight per (input shape, thread count), swapped in by a
    forward pre-hook on the model. oneDNN caches its primitive in the packed weight for the
    first (shape, threads) it runs with and takes a slower path for every other one; a fresh
    copy per key gives each key the cached path. At most MAX_KEYS copies are kept (least
    recently used dropped). Not copied or pickled with the model; cleared when a state_dict is
    loaded (the copies would hold the old weights). All copies hold the same weights, so
    threads calling one model with different shapes at once get correct results (only the
    cached path may be missed); the swap itself is locked."""

    MAX_KEYS = 8

    def __init__(self, engine: str) -> None:
        self.engine = engine
        self.key: tuple | None = None
        self.packs: OrderedDict[tuple, list[Any]] = OrderedDict()
        self.lock = threading.Lock()

    def __deepcopy__(self, memo: dict) -> PerShapePacking:
        return PerShapePacking(self.engine)

    def __getstate__(self) -> dict[str, Any]:
        return {"engine": self.engine}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["engine"])

    @staticmethod
    def install(model: nn.Module, engine: str) -> nn.Module:
        """Idempotent. A deep copy gets its own (empty) copies: nn.Module copies the hooks and
        this object (see __deepcopy__); a GraphModule drops forward hooks, so it reinstalls."""
        model.__dict__["_per_shape_packing"] = PerShapePacking(engine)
        if _swap_packs not in model._forward_pre_hooks.values():
            model.register_forward_pre_hook(_swap_packs)
        if _clear_packs not in model._load_state_dict_post_hooks.values():
            model.register_load_state_dict_post_hook(_clear_packs)
        if isinstance(model, torch.fx.GraphModule):
            hooks = model._deepcopy_hooks
            hooks[:] = [h for h in hooks if not isinstance(h, _Reinstall)] + [_Reinstall(engine)]
        return model

    def swap(self, model: nn.Module, key: tuple) -> None:
        with self.lock:
            if key != self.key:
                self._swap(model, key)

    def clear(self) -> None:
        with self.lock:
            self.key = None
            self.packs.clear()

    def _swap(self, model: nn.Module, key: tuple) -> None:
        holders = [h for h in map(_packed_holder, model.modules()) if h is not None]
        if self.key is not None:  # the current copies have run with self.key
            self.packs[self.key] = [h._packed_params for h in holders]
        if key in self.packs:
            self.packs.move_to_end(key)
            for h, pack in zip(holders, self.packs[key], strict=True):
                h._packed_params = pack
        elif self.key is not None:  # fresh copies: their cache is filled by this key's call
            with engine_set(self.engine):
                for m in model.modules():
                    if _packed_holder(m) is not None:
                        m.set_weight_bias(*m._weight_bias())
        while len(self.packs) >= self.MAX_KEYS:
            self.packs.popitem(last=False)
        self.key = key


class _Reinstall:
    """GraphModule deepcopy hook (a class, so the copy's hook list deep-copies cleanly)."""

    def __init__(self, engine: str) -> None:
        self.engine = engine

    def __call__(self, copied: nn.Module) -> None:
        PerShapePacking.install(copied, self.engine)


def _swap_packs(model: nn.Module, args: tuple) -> None:
    x = args[0] if args else None
    if not isinstance(x, torch.Tensor):
        return
    key = (tuple(x.shape), torch.get_num_threads())
    state = model.__dict__.get("_per_shape_packing")
    if state is not None and key != state.key:
        state.swap(model, key)


def _clear_packs(model: nn.Module, incompatible_keys: Any) -> None:
    state = model.__dict__.get("_per_shape_packing")
    if state is not None:
        state.clear()


@contextmanager
def engine_set(engine: str) -> Iterator[None]:
    """`engine` as torch's quantized engine inside the block, the previous one restored after."""
    before = torch.backends.quantized.engine
    set_engine(engine)
    try:
        yield
    finally:
        torch.backends.quantized.engine = before


# ---------------------------------------------------------------------------- engine: auto
def pick_engine(build: Callable[[str], nn.Module], candidates: list[str],
                batches: list[torch.Tensor], budget_s: float = 3.0
                ) -> tuple[str, nn.Module, dict[str, float]]:
    """Build the model with every candidate engine and keep the fastest, as cudnn.benchmark
    does for convolution algorithms. Each is timed at every batch size in `batches` (batch 1
    and a calibration batch), calls interleaved so machine drift hits all alike; the score is
    the geometric mean over batch sizes of the median latency (ms). Returns (engine, model,
    scores). Engines that fail to build or run are skipped; ties keep the earlier candidate."""
    models: dict[str, nn.Module] = {}
    for engine in candidates:
        try:
            with engine_set(engine):
                m = build(engine)
                with torch.inference_mode():
                    for x in batches:
                        m(x)
            models[engine] = m
        except RuntimeError:
            continue
    if not models:
        raise RuntimeError(f"quantization.engine=auto: no engine of {candidates} could run")
    scores: dict[str, float] = {}
    if len(models) > 1:
        scores = time_candidates(dict(models), batches, budget_s)
    best = min(models, key=lambda e: scores.get(e, 0.0))
    return best, models[best], scores


# ---------------------------------------------------------------------------- observers
class PercentileObserver(obs.MinMaxObserver):
    """Clips the activation range to the [100 - p, p] percentiles, averaged over batches: rare
    outliers then cost no resolution for the bulk of values. (A running max of per-batch
    percentiles would bring the outliers back.)"""

    MAX_SAMPLES = 1 << 20  # torch.quantile's input limit is 16M; a strided sample is plenty

    def __init__(self, percentile: float = 99.99, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.percentile = percentile
        self.register_buffer("batches", torch.tensor(0))

    def forward(self, x_orig: torch.Tensor) -> torch.Tensor:
        if x_orig.numel() == 0:
            return x_orig
        x = x_orig.detach().flatten().float()
        x = x[:: max(1, x.numel() // self.MAX_SAMPLES)]
        p = self.percentile / 100.0
        lo, hi = torch.quantile(x, torch.tensor([1.0 - p, p]))
        n = int(self.batches)
        new_min = lo if n == 0 else (self.min_val * n + lo) / (n + 1)
        new_max = hi if n == 0 else (self.max_val * n + hi) / (n + 1)
        self.min_val.resize_(new_min.shape).copy_(new_min)
        self.max_val.resize_(new_max.shape).copy_(new_max)
        self.batches += 1
        return x_orig


def _weight_schemes(symmetric: bool) -> tuple[torch.qscheme, torch.qscheme]:
    """(per-tensor, per-channel) qscheme for weights. Activations are always affine quint8:
    after a ReLU they are one-sided, and a symmetric range would waste half the codes."""
    if symmetric:
        return torch.per_tensor_symmetric, torch.per_channel_symmetric
    return torch.per_tensor_affine, torch.per_channel_affine


def ptq_qconfig(observer: str, percentile: float, per_channel: bool, symmetric: bool,
                engine: str) -> QConfig:
    """Post-training qconfig: `observer` calibrates activations (quint8); weights are qint8,
    min-max, per output channel or per tensor."""
    tensor_scheme, channel_scheme = _weight_schemes(symmetric)
    act_kwargs = {"dtype": torch.quint8, "qscheme": torch.per_tensor_affine,
                  "reduce_range": reduce_range(engine)}
    act = {
        "minmax": obs.MinMaxObserver.with_args(**act_kwargs),
        "histogram": obs.HistogramObserver.with_args(**act_kwargs),  # minimizes the L2 error
        "percentile": PercentileObserver.with_args(percentile=percentile, **act_kwargs),
    }[observer]
    if per_channel:
        weight = obs.PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=channel_scheme)
    else:
        weight = obs.MinMaxObserver.with_args(dtype=torch.qint8, qscheme=tensor_scheme)
    return QConfig(activation=act, weight=weight)


def qat_qconfig(per_channel: bool, symmetric: bool, engine: str) -> QConfig:
    """Fake quantization with moving-average min-max ranges (torch's default QAT recipe)."""
    tensor_scheme, channel_scheme = _weight_schemes(symmetric)
    rr = reduce_range(engine)
    act = FakeQuantize.with_args(
        observer=obs.MovingAverageMinMaxObserver, quant_min=0, quant_max=127 if rr else 255,
        dtype=torch.quint8, qscheme=torch.per_tensor_affine, reduce_range=rr,
    )
    if per_channel:
        weight = FakeQuantize.with_args(
            observer=obs.MovingAveragePerChannelMinMaxObserver, quant_min=-128, quant_max=127,
            dtype=torch.qint8, qscheme=channel_scheme, ch_axis=0,
        )
    else:
        weight = FakeQuantize.with_args(
            observer=obs.MovingAverageMinMaxObserver, quant_min=-128, quant_max=127,
            dtype=torch.qint8, qscheme=tensor_scheme,
        )
    return QConfig(activation=act, weight=weight)


# ---------------------------------------------------------------------------- FX graph mode
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
    with _quiet():
        return prepare_fx(flatten_as_function(model.eval()), _mapping(qconfig), (example,))


def prepare_qat(model: nn.Module, qconfig: QConfig, example: torch.Tensor, engine: str
                ) -> nn.Module:
    """Trace, fuse and insert fake quantization for training; `model` is consumed. Fused layers
    keep the name of their Linear/Conv and `.weight` stays the trained Parameter, so pruning
    masks keyed by layer name still apply."""
    set_engine(engine)
    with _quiet():
        return prepare_qat_fx(flatten_as_function(model.train()), _mapping(qconfig),
                              (example,))


def convert(prepared: nn.Module, engine: str) -> nn.Module:
    """Observed / fake-quantized model -> real int8 kernels (BN folded into the conv).
    `prepared` is consumed (copy it to convert it twice)."""
    engine = concrete_engine(engine)
    set_engine(engine)
    with _quiet():
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
            with _quiet(), torch.no_grad():
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
