"""Knowledge distillation during fine-tuning and QAT: the dense baseline teaches."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compression.core.errors import ConfigError
from compression.data import DataSpec, Splits
from compression.run import pipeline
from compression.training.loop import Distillation, FinetuneConfig, TrainConfig, train


def test_the_loss_blends_labels_and_the_teachers_soft_targets() -> None:
    student = torch.tensor([[2.0, 0.0, -1.0]])
    kd = Distillation(alpha=0.25, temperature=2.0)
    hard = torch.tensor(1.5)
    # a student equal to its teacher owes nothing to it: only (1 - alpha) of the hard loss
    assert kd(hard, student, student).item() == pytest.approx(0.75 * 1.5)
    log_p = torch.log_softmax(student / 2, 1)
    teacher = torch.tensor([[0.0, 3.0, 0.0]])
    log_q = torch.log_softmax(teacher / 2, 1)
    kl = float((log_q.exp() * (log_q - log_p)).sum())
    assert kd(hard, student, teacher).item() == pytest.approx(0.75 * 1.5 + 0.25 * 4 * kl)


def test_alpha_one_follows_the_teacher_not_the_labels() -> None:
    """With alpha=1 the labels play no part: a student trained on a teacher that always says
    class 3 learns class 3 whatever the labels say."""
    torch.manual_seed(0)
    x = torch.randn(64, 1, 2, 2)
    data = Splits(DataSpec("toy", 1, 2, 4), x, torch.zeros(64, dtype=torch.long),
                  x, torch.zeros(64, dtype=torch.long), x, torch.zeros(64, dtype=torch.long))
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(4, 4))
    with torch.no_grad():
        teacher[1].weight.zero_()
        teacher[1].bias.copy_(torch.tensor([0.0, 0.0, 0.0, 5.0]))
    student = nn.Sequential(nn.Flatten(), nn.Linear(4, 4))
    train(student, data, TrainConfig(epochs=30, batch_size=16, lr=0.05), teacher=teacher,
          distillation=Distillation(alpha=1.0, temperature=1.0))
    assert (student(x).argmax(1) == 3).all()


@pytest.mark.parametrize("bad", ["finetune.alpha=1.5", "finetune.temperature=0",
                                 "finetune.distill=maybe"])
def test_bad_distillation_settings_fail_before_training(compose_cfg, bad: str) -> None:
    with pytest.raises(ConfigError, match=bad.split("=")[0]):
        pipeline.check(compose_cfg(bad))


def test_distillation_on_and_off_change_the_fine_tuned_model(compose_cfg) -> None:
    """Same run with and without the teacher: both finish, and the teacher changes the result
    (the same seed and data otherwise give identical models)."""
    common = ("pruning=unstructured", "pruning.sparsity=0.9", "finetune.epochs=2",
              "tracking.enabled=false", "objectives=[val_accuracy,accuracy]")
    off = pipeline.run(compose_cfg(*common))
    assert pipeline.run(compose_cfg(*common)) == off  # deterministic without the teacher
    on = pipeline.run(compose_cfg(*common, "finetune.distill=true", "finetune.alpha=0.9"))
    assert on != off
    assert FinetuneConfig(distill=True).teacher_loss() == Distillation(0.5, 4.0)
    assert FinetuneConfig().teacher_loss() is None


def test_qat_is_distilled_too(compose_cfg) -> None:
    cfg = compose_cfg("quantization=qat_int8", "quantization.epochs=1", "finetune.distill=true",
                      "tracking.enabled=false", "objectives=[accuracy]")
    assert 0.5 < pipeline.run(cfg) <= 1.0
