"""The user's own model: an ordinary nn.Module and a factory the framework builds it with
(`model._target_=examples.own_model.model.small_cnn`). `width` is this factory's own argument,
passed through untouched (`+model.width=32`)."""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),          # 28 -> 14
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 14 -> 7
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 7 * 7, 64),
                                        nn.ReLU(), nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 28, 28) -> (B, classes)
        return self.classifier(self.features(x))


def small_cnn(num_classes: int = 10, width: int = 16) -> nn.Module:
    return SmallCNN(num_classes, width)
