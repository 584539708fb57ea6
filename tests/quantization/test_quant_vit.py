"""Quantization of the tiny ViT: every Linear (patch embedding, q/k/v/out, MLP, head) becomes
int8 or low-bit, the model still runs on image batches, and stays close to the fp32 one."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from compression.models.build import ModelConfig, build_model
from compression.quantization import QUANTIZERS, Quantized
from compression.run.session import Session

LINEARS = 1 + 4 * 6 + 1  # embed, 4 blocks x (q, k, v, out, fc1, fc2), head


@pytest.fixture
def vit(digits) -> nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(name="vit"), digits.spec).eval()


def _quantize(model: nn.Module, session: Session | None, **cfg: object) -> nn.Module:
    qcfg = QUANTIZERS.build_config(cfg)
    result = QUANTIZERS.get(qcfg.mode).handler.quantize(copy.deepcopy(model), qcfg, session)
    return Quantized.of(result, qcfg).model


def test_dynamic_int8_swaps_every_linear_of_the_vit(vit, digits) -> None:
    q = _quantize(vit, None, mode="dynamic_int8")
    assert not any(type(m) is nn.Linear for m in q.modules())
    swapped = [m for m in q.modules() if "quantized" in type(m).__module__ and
               type(m).__name__ == "Linear"]
    assert len(swapped) == LINEARS
    x = digits.val_x[:32]
    assert (q(x) - vit(x)).abs().max() < 0.1 * vit(x).abs().max()


@pytest.mark.parametrize("extra", [{"bits": 4}, {"bits": "ternary", "qat": True, "epochs": 1}],
                         ids=["4bit", "ternary-qat"])
def test_lowbit_runs_on_every_linear_of_the_vit(vit, digits, session, extra) -> None:
    q = _quantize(vit, session, mode="lowbit", **extra)
    assert not any(type(m) is nn.Linear for m in q.modules())
    out = q(digits.val_x[:8])
    assert out.shape == (8, 10) and torch.isfinite(out).all()
