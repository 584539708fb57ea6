"""Model factories the sweep tests select through `model._target_` (PYTHONPATH=tests/sweep)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compression.models.build import example_user_model


class _Exploding(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:  # the pre-training check runs one eval-mode forward: let it pass
            raise RuntimeError("boom: deliberate failure")
        return self.fc(x.flatten(1))


def exploding(**kwargs: Any) -> nn.Module:
    """A job that raises while training its baseline (its MLflow run is open by then)."""
    return _Exploding()


class _KillOnce(nn.Module):
    def __init__(self, marker: str, inner: nn.Module) -> None:
        super().__init__()
        self.marker, self.inner = marker, inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and not Path(self.marker).exists():
            Path(self.marker).touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return self.inner(x)


def kill_once(marker: str, **kwargs: Any) -> nn.Module:
    """SIGKILLs the whole sweep process in the first forward pass of the first trial (its MLflow
    run is RUNNING by then), then behaves: an event-driven stand-in for `kill -9` mid-sweep."""
    return _KillOnce(marker, example_user_model(**kwargs))


def records_start(record: str, **kwargs: Any) -> nn.Module:
    """Appends to `record` what the worker process had imported when its job began: a worker
    forked from the sweep starts with the optimizer's torch._dynamo already there (the sweep
    imports it before forking); a fresh interpreter has to import it itself."""
    import json
    import sys

    with open(record, "a") as f:
        f.write(json.dumps({"pid": os.getpid(), "dynamo": "torch._dynamo" in sys.modules}) + "\n")
    return example_user_model(**kwargs)


class _Hang(nn.Module):
    def __init__(self, marker: str, inner: nn.Module) -> None:
        super().__init__()
        self.marker, self.inner = marker, inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:  # not in the pre-training check's eval-mode forward
            Path(self.marker).write_text(str(os.getpid()))
            time.sleep(600)
        return self.inner(x)


def hangs(marker: str, **kwargs: Any) -> nn.Module:
    """Writes its process id to `marker` in its first forward pass (its MLflow run is RUNNING
    by then), then blocks: a trial a test can kill the sweep under."""
    return _Hang(marker, example_user_model(**kwargs))
