"""torch.ao qconfigs for static (post-training) and QAT int8: which observer calibrates the
activations (min-max, histogram, or the `PercentileObserver` defined here), and the weights'
scheme (per channel or per tensor, symmetric or affine)."""

from __future__ import annotations

from typing import Any

from compression.core.lazy import torch
from compression.quantization.backends.torch_ao_engine import quiet, reduce_range

with quiet():
    from torch.ao.quantization import QConfig
    from torch.ao.quantization import observer as obs
    from torch.ao.quantization.fake_quantize import FakeQuantize


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

