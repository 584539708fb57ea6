"""User model factories referenced by tests through `model._target_=factories.<name>`."""

from __future__ import annotations

import torch
from torch import nn


class _Raises(nn.Module):
    def __init__(self, exc: BaseException) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)
        self.exc = exc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:  # the pre-training check runs one eval-mode forward: let it pass
            raise self.exc
        return self.fc(x.flatten(1))


def exploding_model() -> nn.Module:
    """Fails on the first training forward pass, i.e. during baseline training."""
    return _Raises(RuntimeError("boom: deliberate failure"))


def interrupted_model() -> nn.Module:
    """Behaves as if the user pressed Ctrl-C during training."""
    return _Raises(KeyboardInterrupt())


def tiny_mlp(hidden: int = 16) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
