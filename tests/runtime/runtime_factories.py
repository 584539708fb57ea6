"""User model factories for the runtime tests (`model._target_=runtime_factories.<name>`)."""

from __future__ import annotations

import torch
from torch import nn


class _KthValue(nn.Module):
    """Runs in torch, but aten.kthvalue has no ONNX conversion."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x.flatten(1))
        return y - torch.kthvalue(y, 2, dim=1, keepdim=True).values


def kthvalue_model() -> nn.Module:
    return _KthValue()
