"""The one module that touches `torch.ao.quantization` (deprecated, but it has the fastest int8 CPU
kernels in torch 2.13: fbgemm / oneDNN / QNNPACK). Moving to torchao is a change to this file.

Static and QAT int8 use FX graph mode (`prepare_fx` / `convert_fx`): it inserts the quantize /
dequantize steps and fuses Conv+BN+ReLU, Linear+ReLU (what the x86/fbgemm backend wants) from the
traced graph, so models need no QuantStub edits and residual adds work too.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

ENGINES = ["x86", "fbgemm", "onednn", "qnnpack"]

# Layer kinds `quantize_dynamic` has int8 kernels for (Conv has none: use static_int8).
DYNAMIC_LAYER_TYPES: dict[str, type[nn.Module]] = {
    "linear": nn.Linear, "lstm": nn.LSTM, "gru": nn.GRU,
}
OBSERVERS = ["minmax", "histogram", "percentile"]


@contextmanager
def _quiet() -> Iterator[None]:
    """torch.ao warns on every call that it is deprecated (and about observer defaults)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        yield


with _quiet():
    from torch.ao.quantization import QConfig, QConfigMapping
    from torch.ao.quantization import observer as obs
    from torch.ao.quantization.fake_quantize import FakeQuantize
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx, prepare_qat_fx


def set_engine(engine: str) -> None:
    if engine not in torch.backends.quantized.supported_engines:
        raise RuntimeError(
            f"quantization.engine={engine!r} is not supported by this torch build; "
            f"supported: {', '.join(torch.backends.quantized.supported_engines)}"
        )
    torch.backends.quantized.engine = engine


def reduce_range(engine: str) -> bool:
    """x86/fbgemm int8 GEMMs add pairs of u8*s8 products in int16 (vpmaddubsw) on CPUs without
    VNNI; 7-bit activations keep that from saturating. torch's default qconfigs do the same."""
    return engine in ("x86", "fbgemm")


# ---------------------------------------------------------------------------- dynamic
def quantize_dynamic_int8(model: nn.Module, layers: list[str], engine: str) -> nn.Module:
    """Weights to int8 (per-tensor symmetric), activations quantized on the fly per batch."""
    set_engine(engine)
    with _quiet():
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(model, {DYNAMIC_LAYER_TYPES[k] for k in layers}, dtype=torch.qint8)


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
def prepare_static(model: nn.Module, qconfig: QConfig, example: torch.Tensor, engine: str
                   ) -> nn.Module:
    """Trace, fuse (Conv+BN folded in eval mode) and insert observers; `model` is consumed."""
    set_engine(engine)
    with _quiet():
        return prepare_fx(model.eval(), QConfigMapping().set_global(qconfig), (example,))


def prepare_qat(model: nn.Module, qconfig: QConfig, example: torch.Tensor, engine: str
                ) -> nn.Module:
    """Trace, fuse and insert fake quantization for training; `model` is consumed. Fused layers
    keep the name of their Linear/Conv and `.weight` stays the trained Parameter, so pruning
    masks keyed by layer name still apply."""
    set_engine(engine)
    with _quiet():
        return prepare_qat_fx(model.train(), QConfigMapping().set_global(qconfig), (example,))


def convert(prepared: nn.Module, engine: str) -> nn.Module:
    """Observed / fake-quantized model -> real int8 kernels (BN folded into the conv)."""
    set_engine(engine)
    with _quiet():
        return convert_fx(prepared.eval())


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
