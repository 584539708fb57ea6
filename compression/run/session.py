"""The run's session: what pruning and quantization methods may use besides the model (the
config, the data, fine-tuning, calibration batches), and what the stages after them read
(the masks, transforms and metrics a method returned; timings; per-layer figures)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from compression import data as data_mod
from compression.config.run import RunConfig
from compression.core.job import Reporter
from compression.pruning import MaskSet
from compression.pruning.base import PruneResult
from compression.training.loop import evaluate, load_optimizer_machinery, train


@dataclass
class Session:
    """What methods may use besides the model; also collects timings."""

    rc: RunConfig
    data: data_mod.Splits
    timings: dict[str, float] = field(default_factory=dict)
    # Set by pruning, read by later stages: the masks (QAT keeps them applied), structural
    # transforms recorded in the artifact so the loader can rebuild the smaller modules, and
    # method-specific metrics (e.g. channels removed) merged into the run's metrics.
    masks: MaskSet = field(default_factory=MaskSet)
    transforms: list[dict[str, Any]] = field(default_factory=list)
    extra_metrics: dict[str, float] = field(default_factory=dict)
    # Per-layer figures a stage records (e.g. quantization error), written to the layer CSV.
    layer_extra: dict[str, dict[str, float]] = field(default_factory=dict)
    teacher: nn.Module | None = None  # the dense baseline, for finetune.distill
    extra_params: dict[str, str] = field(default_factory=dict)  # e.g. the allocated targets
    # Per-layer allocation (sparsity and / or bits) -> the artifact allocation.csv
    allocation: dict[str, dict[str, Any]] = field(default_factory=dict)
    # A sweep's pruner: val accuracy after every fine-tuning epoch, numbered across the run's
    # fine-tuning passes (iterative rounds, QAT), so the steps of every trial line up.
    reporter: Reporter | None = None
    epochs_done: int = 0

    def finetune(self, model: nn.Module, masks: MaskSet | None = None, epochs: int | None = None,
                 lr: float | None = None) -> None:
        """Fine-tune with `masks` (default: the session's) reapplied after every step."""
        masks = self.masks if masks is None else masks
        epochs = self.rc.finetune.epochs if epochs is None else epochs
        if epochs <= 0:
            return
        load_optimizer_machinery()
        t0 = time.perf_counter()
        distillation = self.rc.finetune.teacher_loss()
        train(model, self.data, self.rc.train, epochs=epochs, lr=lr or self.rc.finetune.lr,
              seed=self.rc.seed + 1, after_step=masks.after_step(model), desc="finetune",
              teacher=self.teacher if distillation else None, distillation=distillation,
              after_epoch=self._report if self.reporter is not None else None)
        self.timings["finetune_seconds"] = (
            self.timings.get("finetune_seconds", 0.0) + time.perf_counter() - t0
        )

    def keep(self, pruned: PruneResult) -> None:
        """What the pruning method returned, for the stages after it."""
        self.masks = pruned.masks
        self.transforms += pruned.transforms
        self.extra_metrics.update(pruned.metrics)

    def _report(self, model: nn.Module) -> None:
        assert self.reporter is not None
        self.epochs_done += 1
        # the run's metric, as the study's val_accuracy objective holds it (perplexity: the
        # sweeper minimizes, so a pruner reads a falling value as progress)
        fn = None if self.rc.metric.is_default else self.rc.metric.fn()
        self.reporter.report(evaluate(model, self.data.val_x, self.data.val_y, metric=fn),
                             self.epochs_done)

    def calibration_batches(self, n: int) -> list[torch.Tensor]:
        bs = self.rc.train.batch_size
        return [self.data.train_x[i * bs : (i + 1) * bs] for i in range(n)
                if i * bs < len(self.data.train_x)]


@contextlib.contextmanager
def fixed_threads(n: int) -> Iterator[None]:
    """Fix torch's thread count for this job and restore it after (jobs may share a process)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
