"""Schedules (one-shot, iterative, gradual cubic) and criteria (taylor, movement, snip)."""

from __future__ import annotations

import itertools

import pytest
import torch

from compression.config.run import RunConfig
from compression.core.errors import ConfigError
from compression.models.build import prunable_layers
from compression.pruning.criteria import accumulated, summed_grads
from compression.pruning.schedules import cubic_plan


def _sparsity(model) -> float:
    ws = [m.weight for m in prunable_layers(model).values()]
    return sum(int((w == 0).sum()) for w in ws) / sum(w.numel() for w in ws)


def test_cubic_plan_follows_zhu_gupta(compose_cfg) -> None:
    cfg = RunConfig.from_cfg(compose_cfg("pruning=unstructured", "pruning.schedule=gradual",
                                         "pruning.initial_sparsity=0.1",
                                         "pruning.gradual_steps=4")).pruning
    plan = cubic_plan(cfg, total_steps=100)  # n dt = 75 steps -> dt = 18
    assert sorted(plan) == [18, 36, 54, 72]
    s_f = 0.9
    levels = [plan[t](s_f) for t in sorted(plan)]
    expected = [s_f + (0.1 - s_f) * (1 - k / 4) ** 3 for k in range(1, 5)]
    assert levels == pytest.approx(expected) and levels[-1] == pytest.approx(s_f)
    assert all(a < b for a, b in itertools.pairwise(levels))


@pytest.mark.parametrize("schedule", ["iterative", "gradual"])
def test_schedules_reach_the_target_with_growing_masks(prune, schedule) -> None:
    seen = []
    model, masks, _ = prune("pruning=unstructured", "pruning.sparsity=0.8",
                                  f"pruning.schedule={schedule}", "finetune.epochs=1",
                                  "pruning.rounds=3", "pruning.gradual_steps=3", "data.limit=256")
    seen.append(_sparsity(model))
    assert abs(seen[0] - 0.8) < 0.01
    for name, mask in masks.masks.items():
        assert torch.equal(prunable_layers(model)[name].weight != 0, mask), name


def test_iterative_rounds_prune_geometrically(make_session, monkeypatch) -> None:
    from compression.models.build import build_model
    from compression.pruning import PRUNERS

    session = make_session("pruning=unstructured", "pruning.sparsity=0.875",
                           "pruning.schedule=iterative", "pruning.rounds=3")
    levels = []
    monkeypatch.setattr(session, "finetune",
                        lambda model, masks=None, **kw: levels.append(_sparsity(model)))
    torch.manual_seed(0)
    model = build_model(session.rc.model, session.data.spec)
    PRUNERS.get("unstructured").handler(model, session.rc.pruning, session)
    assert levels == pytest.approx([0.5, 0.75, 0.875], abs=0.01)  # 1 - (1 - s)^(r/3)


@pytest.mark.parametrize("criterion", ["taylor", "movement"])
def test_gradient_criteria_choose_other_weights_than_magnitude(prune, criterion) -> None:
    mag, _, _ = prune("pruning=unstructured", "pruning.sparsity=0.5")
    other, _, _ = prune("pruning=unstructured", "pruning.sparsity=0.5",
                        f"pruning.criterion={criterion}", "pruning.score_batches=2")
    assert abs(_sparsity(other) - 0.5) < 0.01
    overlap = float(((mag.fc1.weight == 0) & (other.fc1.weight == 0)).float().mean())
    assert overlap < 0.45  # not the magnitude choice (identical masks would overlap at 0.5)


def test_taylor_accumulates_per_batch_scores_so_opposite_gradients_do_not_cancel() -> None:
    layer = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -1.0]]))
    model = torch.nn.Sequential(layer, torch.nn.ConstantPad1d((0, 1), 0.0))  # logits [w.x, 0]
    x = torch.tensor([[1.0, 1.0]])  # w.x = 0: p = 0.5, so d(loss)/d(logit) is -0.5 then +0.5
    batches = [(x, torch.tensor([0])), (x, torch.tensor([1]))]
    assert summed_grads(model, {"0": layer}, batches)["0"].abs().max() < 1e-6  # cancelled
    per_batch = accumulated(model, {"0": layer}, batches, lambda w, g: (w * g).abs())
    torch.testing.assert_close(per_batch["0"], torch.tensor([[1.0, 1.0]]))  # 0.5 + 0.5 each


@pytest.mark.parametrize("method", ["block", "structured"])
def test_criteria_and_schedules_compose_with_other_patterns(prune, method) -> None:
    model, _, _ = prune("model=lenet5", f"pruning={method}", "pruning.criterion=movement",
                        "pruning.schedule=gradual", "finetune.epochs=1", "pruning.gradual_steps=2",
                        "pruning.sparsity=0.5", "data.limit=256")
    assert _sparsity(model) > 0.3 or method == "structured"


def test_snip_prunes_a_reinitialized_model_then_trains_it_from_scratch(prune) -> None:
    from compression.training.loop import evaluate

    trained, _, _ = prune("pruning=none")
    trained.fc1.weight.data.fill_(1.0)  # a marker the re-initialization must overwrite
    model, _, session = prune("pruning=unstructured", "pruning.criterion=snip",
                              "pruning.sparsity=0.9", "train.epochs=2", model=trained)
    assert abs(_sparsity(model) - 0.9) < 0.01
    assert not bool((model.fc1.weight == 1.0).any())
    assert evaluate(model, session.data.val_x, session.data.val_y) > 0.3  # chance is 0.1


def test_snip_needs_oneshot(compose_cfg) -> None:
    with pytest.raises(ConfigError, match="criterion=snip prunes at initialization"):
        RunConfig.from_cfg(compose_cfg("pruning=unstructured", "pruning.criterion=snip",
                                       "pruning.schedule=gradual"))
