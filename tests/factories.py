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


class _OddTensors(nn.Module):
    """Every kind of tensor the artifact's codings must survive: big and randomly sparse, dense,
    all zeros, empty, one element (zero or not), 0-d, integer and half."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)  # a model still: a forward pass exists
        shapes = {"sparse": (60, 50), "dense": (7, 3), "zeros": (40, 40), "empty": (0, 5),
                  "empty1d": (0,), "one": (1,), "one_zero": (1,), "scalar": ()}
        for name, shape in shapes.items():
            self.register_parameter(name, nn.Parameter(torch.zeros(shape)))
        self.register_buffer("codes", torch.zeros(30, 30, dtype=torch.int8))
        self.register_buffer("halves", torch.zeros(200, dtype=torch.float16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def odd_tensors() -> nn.Module:
    return _OddTensors()


# Data factories referenced through `data._target_=factories.<name>` (data=custom).
def blobs(n: int = 120, features: int = 6, classes: int = 3, seed: int = 0):
    """Separable Gaussian blobs as (train, val, test) arrays; val/test left to be carved."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.normal(size=(n, features)).astype("float32") + 3 * y[:, None]
    return (x, y), None, None


class PairDataset(torch.utils.data.Dataset):
    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.y = torch.randint(0, 4, (n,), generator=g)
        self.x = torch.randn(n, 1, 8, 8, generator=g) + self.y[:, None, None, None]
        self.targets = self.y.tolist()

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], int(self.y[i])


def datasets(n: int = 80):
    """torch Datasets for every split, as a dict."""
    return {"train": PairDataset(n, 0), "val": PairDataset(n // 4, 1),
            "test": PairDataset(n // 4, 2)}


def lenet_like_for_8x8(classes: int = 4) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 64, classes))


def tabular_mlp(features: int = 6, classes: int = 3) -> nn.Module:
    return nn.Sequential(nn.Linear(features, 16), nn.ReLU(), nn.Linear(16, classes))


def balanced_error(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """A user metric (metric._target_): 1 - mean per-class recall error, i.e. balanced recall."""
    pred = logits.argmax(dim=1)
    recalls = [float((pred[labels == c] == c).float().mean()) for c in labels.unique()]
    return sum(recalls) / len(recalls)


def not_a_number(logits: torch.Tensor, labels: torch.Tensor) -> str:
    return "high"
