"""User models for quantization tests, referenced as `model._target_=quant_factories.<name>`."""

from __future__ import annotations

import torch
from torch import nn


class _DataDependent(nn.Module):
    """Python control flow on tensor values: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        if x.sum() > 0:
            x = -x
        return self.fc(x)


def untraceable() -> nn.Module:
    return _DataDependent()


def conv1d_model() -> nn.Module:
    return nn.Sequential(nn.Flatten(1), nn.Unflatten(1, (1, 64)), nn.Conv1d(1, 4, 3),
                         nn.Flatten(1), nn.Linear(248, 10))
