"""Training, fine-tuning and evaluation loops on in-memory tensors."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass

from tqdm.auto import tqdm

from compression.core import validation as v
from compression.core.errors import ConfigError
from compression.core.lazy import F, inference_mode, nn, torch
from compression.core.registry import Registry
from compression.data import Splits, batches

log = logging.getLogger(__name__)

OPTIMIZERS: Registry[Callable[..., torch.optim.Optimizer]] = Registry("train.optimizer")
OPTIMIZERS.add("sgd", lambda params, lr, momentum, weight_decay: torch.optim.SGD(
    params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=momentum > 0))
OPTIMIZERS.add("adam", lambda params, lr, momentum, weight_decay: torch.optim.Adam(
    params, lr=lr, weight_decay=weight_decay))


@dataclass
class TrainConfig:
    """How the dense baseline is trained. Every field is part of the baseline cache key."""

    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0
    schedule: str = "constant"  # learning rate: constant, or cosine decay to 0 over the run

    def __post_init__(self) -> None:
        v.one_of("train.schedule", self.schedule, LR_SCHEDULES)
        v.in_range("train.epochs", self.epochs, 1, None, integer=True)
        v.in_range("train.batch_size", self.batch_size, 1, None, integer=True)
        v.in_range("train.lr", self.lr, 0, None, lo_open=True)
        v.one_of("train.optimizer", self.optimizer, OPTIMIZERS)
        v.in_range("train.momentum", self.momentum, 0, 1, hi_open=True)
        v.in_range("train.weight_decay", self.weight_decay, 0, None)


@dataclass
class FinetuneConfig:
    """Fine-tuning after pruning (same optimizer and batch size as `train`), optionally
    distilled from the dense baseline (Hinton et al. 2015: logits softened by `temperature`)."""

    epochs: int = 5
    lr: float = 1e-3
    distill: bool = False  # the dense baseline teaches (fine-tuning and QAT alike)
    alpha: float = 0.5  # weight of the distillation term; 1 - alpha stays on the labels
    temperature: float = 4.0

    def __post_init__(self) -> None:
        v.in_range("finetune.epochs", self.epochs, 0, None, integer=True)
        v.in_range("finetune.lr", self.lr, 0, None, lo_open=True)
        v.one_of("finetune.distill", self.distill, [True, False])
        v.in_range("finetune.alpha", self.alpha, 0, 1)
        v.in_range("finetune.temperature", self.temperature, 0, 100, lo_open=True)

    def teacher_loss(self) -> Distillation | None:
        return Distillation(self.alpha, self.temperature) if self.distill else None


@dataclass(frozen=True)
class Distillation:
    """Logit distillation: (1 - alpha) * CE(student, labels) + alpha * T^2 * KL(teacher_T ||
    student_T), softmaxes at temperature T; T^2 keeps the soft term's gradients on the scale
    of the hard one's as T grows."""

    alpha: float
    temperature: float

    def __call__(self, hard: torch.Tensor, student: torch.Tensor, teacher: torch.Tensor
                 ) -> torch.Tensor:
        t = self.temperature
        soft = F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1),
                        reduction="sum", log_target=True)
        # per prediction, like the hard term: N for (N, C) logits, N*T for (N, C, T) sequences
        soft = soft / (student.numel() // student.shape[1])
        return (1 - self.alpha) * hard + self.alpha * t * t * soft


# learning-rate schedules (train.schedule), not pruning's (compression.pruning.schedules)
LR_SCHEDULES: Registry[Callable[[torch.optim.Optimizer, int], object | None]] = Registry(
    "train.schedule")
LR_SCHEDULES.add("constant", lambda opt, total: None)
LR_SCHEDULES.add("cosine", lambda opt, total: torch.optim.lr_scheduler.CosineAnnealingLR(
    opt, max(1, total)))

class DivergedError(ConfigError):
    """The training loss became NaN or infinite: the settings (usually the learning rate) make
    training diverge. One line, like any bad value; the run ends FAILED and nothing is cached."""


StepHook = Callable[[int], None]  # called with the global step number after each optimizer step
EpochHook = Callable[["nn.Module"], None]  # called with the model after each epoch (e.g. to report)


def load_optimizer_machinery() -> None:
    """The first optimizer a process builds imports torch._dynamo (about 1 s). Callers that time
    training call this first, so that the seconds they log are training, not that import."""
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)


def train(
    model: nn.Module,
    data: Splits,
    cfg: TrainConfig,
    *,
    epochs: int | None = None,
    lr: float | None = None,
    seed: int = 0,
    after_step: StepHook | None = None,
    desc: str = "train",
    teacher: nn.Module | None = None,
    distillation: Distillation | None = None,
    after_epoch: EpochHook | None = None,
) -> None:
    """Train `model` in place on `data.train_*`; `after_step` keeps e.g. pruning masks applied;
    with `teacher` and `distillation` the loss also follows the teacher's softened logits;
    `after_epoch(model)` runs after every epoch (a sweep's pruner may stop the run there)."""
    epochs = cfg.epochs if epochs is None else epochs
    lr = cfg.lr if lr is None else lr
    opt = OPTIMIZERS[cfg.optimizer](
        [p for p in model.parameters() if p.requires_grad],
        lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
    )
    gen = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()
    steps_per_epoch = -(-len(data.train_y) // cfg.batch_size)
    scheduler = LR_SCHEDULES[cfg.schedule](opt, epochs * steps_per_epoch)
    step = 0
    bar = tqdm(total=epochs * steps_per_epoch, desc=desc, unit="step", leave=False,
               file=sys.stderr, dynamic_ncols=True, mininterval=0.5,
               disable=None)  # None: bars on a terminal, silent in log files
    model.train()
    for epoch in range(epochs):
        for x, y in batches(data.train_x, data.train_y, cfg.batch_size, gen):
            opt.zero_grad(set_to_none=True)
            out = model(x)
            loss = loss_fn(out, y)
            if teacher is not None and distillation is not None:
                with torch.no_grad():
                    target = teacher(x)
                loss = distillation(loss, out, target)
            if not torch.isfinite(loss):  # stop at once: every later step would be garbage too
                bar.close()
                raise DivergedError(
                    f"{desc}: the training loss became {loss.item()} at step {step + 1} (epoch "
                    f"{epoch + 1}; optimizer {cfg.optimizer}, lr {lr:g}): training diverged; "
                    "lower the learning rate")
            loss.backward()
            opt.step()
            if scheduler is not None:
                scheduler.step()
            step += 1
            if after_step is not None:
                after_step(step)
            bar.update(1)
        bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
        if after_epoch is not None:
            after_epoch(model)
            model.train()  # the hook may evaluate
    bar.close()
    model.eval()


@inference_mode
def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = 512,
    cast: Callable[[torch.Tensor], torch.Tensor] | None = None,
    metric: Callable[[torch.Tensor, torch.Tensor], float] | None = None,
) -> float:
    """Top-1 accuracy in [0, 1], or `metric(logits, labels)` over the whole split (its logits
    gathered: F1 and user metrics are not means of per-batch values). `cast` converts inputs
    (e.g. to fp16 for a half model)."""
    model.eval()
    correct = 0
    logits = []
    for xb, yb in batches(x, y, batch_size):
        if cast is not None:
            xb = cast(xb)
        out = model(xb)
        if metric is None:
            correct += int((out.argmax(dim=1) == yb).sum())
        else:
            logits.append(out.float())
    if metric is not None:
        return metric(torch.cat(logits), y)
    return correct / max(1, y.numel())  # sequence labels (N, T): every position counts
