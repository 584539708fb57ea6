"""Structured channel removal: coupled groups, smaller shapes, same function as the masked
model, refusals that name the layer, and artifacts that reload."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compression.artifact.format import load_artifact, save_artifact
from compression.core.errors import ConfigError
from compression.data import DataSpec
from compression.models.build import ModelConfig, build_model
from compression.pruning import PRUNERS, check
from compression.pruning.graph import channel_groups, conv_bn_pairs
from compression.pruning.structured import removed_count
from compression.pruning.surgery import fold_batchnorm_
from compression.quantization import QUANTIZERS

SPEC = DataSpec("digits", 1, 8, 10)


class UserNet(nn.Module):
    """Common layers, some functional: conv-bn-relu, a residual add, pooling, flatten, linear."""

    def __init__(self, joint: str = "add") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 12, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(12)
        self.conv2 = nn.Conv2d(12, 12, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(12)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(12 * 16 if joint == "add" else 24 * 16, 20)  # cat: 24 channels
        self.fc2 = nn.Linear(20, 10)
        self.joint = joint

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.bn1(self.conv1(x)))
        b = self.bn2(self.conv2(a))
        if self.joint == "add":
            y = a + b
        elif self.joint == "cat":
            y = torch.cat([a, b], 1)
        else:  # an op the graph walk does not follow
            y = torch.cat([a, b.roll(1, 1)], 1)
        y = torch.flatten(self.pool(torch.relu(y)), 1)  # (B, C*4*4)
        return self.fc2(F.relu(self.fc1(y)))


def user_net() -> nn.Module:
    return UserNet()


def test_residual_adds_couple_channels_with_their_batchnorms() -> None:
    groups = channel_groups(build_model(ModelConfig(name="resnet"), SPEC), SPEC.example_input())
    by_producer = {p: g for g in groups for p in g.producers}
    stem = by_producer["stem.0"]
    assert set(stem.producers) == {"stem.0", "layer1.conv2"}  # identity shortcut
    assert {n for n, _, _ in stem.norms} == {"stem.1", "layer1.bn2"}
    assert {n for n, _, _ in stem.consumers} == {"layer1.conv1", "layer2.conv1",
                                                 "layer2.shortcut.0"}
    assert set(by_producer["layer3.conv2"].producers) == {"layer3.conv2", "layer3.shortcut.0"}
    assert by_producer["fc"].frozen == "the model output"


def test_flatten_into_linear_repeats_each_channel_over_its_positions() -> None:
    groups = channel_groups(build_model(ModelConfig(name="lenet5"), SPEC), SPEC.example_input())
    conv2 = next(g for g in groups if g.producers == ["conv2"])
    assert conv2.consumers == [("fc1", 4, 0)]  # (16, 2, 2) -> 64 features


def _removed_and_masked(prune, *overrides: str, model: nn.Module | None = None):
    masked, _, _ = prune("pruning=structured", "pruning.physical=false", *overrides,
                         model=copy.deepcopy(model) if model is not None else None)
    removed, masks, session = prune("pruning=structured", *overrides, model=model)
    return removed.eval(), masked.eval(), masks, session


@pytest.mark.parametrize("name", ["mlp", "lenet5", "resnet"])
def test_removed_model_is_smaller_and_computes_what_the_masked_one_does(prune, name) -> None:
    removed, masked, masks, session = _removed_and_masked(prune, f"model={name}")
    assert len(masks) == 0 and session.transforms[0]["kind"] == "channels"
    assert session.extra_metrics["structured_physical"] == 1.0
    assert session.extra_metrics["param_reduction"] > 0.3
    x = session.data.test_x[:32]
    with torch.no_grad():
        assert torch.allclose(removed(x), masked(x), atol=1e-5)
    full = build_model(session.rc.model, SPEC)
    for (n, m), (_, m0) in zip(removed.named_modules(), full.named_modules(), strict=True):
        if isinstance(m, nn.Conv2d | nn.Linear) and n not in ("fc", "fc3"):
            assert m.weight.shape[0] == round(m0.weight.shape[0] / 2), n


def test_kept_channels_carry_the_same_activations(prune) -> None:
    removed, masked, _, session = _removed_and_masked(prune, "model=resnet")
    kept = session.transforms[0]["layers"]["layer2.bn1"]["features"]
    acts = {}
    for tag, model in (("removed", removed), ("masked", masked)):
        model.layer2.relu1.register_forward_hook(lambda m, i, o, tag=tag: acts.__setitem__(tag, o))
        with torch.no_grad():
            model(session.data.test_x[:8])
    assert acts["removed"].shape[1] == len(kept) == 16
    assert torch.allclose(acts["removed"], acts["masked"][:, kept], atol=1e-5)


def test_masking_only_keeps_shapes_and_says_so(prune) -> None:
    model, masks, session = prune("model=lenet5", "pruning=structured", "pruning.physical=false")
    assert model.conv2.weight.shape == (16, 6, 5, 5) and len(masks) > 0
    rows = (model.conv2.weight != 0).flatten(1).any(1)
    assert int(rows.sum()) == 8
    assert session.extra_metrics["structured_physical"] == 0.0
    assert session.extra_metrics["param_reduction"] == 0.0
    assert session.transforms == []


def test_user_model_with_functional_ops_and_residual_add(prune) -> None:
    removed, masked, _, session = _removed_and_masked(prune, model=user_net())
    assert removed.conv1.weight.shape[0] == removed.conv2.weight.shape[0] == 6  # coupled by add
    assert removed.fc1.weight.shape == (10, 6 * 16) and removed.bn2.num_features == 6
    x = session.data.test_x[:16]
    with torch.no_grad():
        assert torch.allclose(removed(x), masked(x), atol=1e-5)


def test_unsupported_op_is_refused_naming_the_layer_before_training(make_session) -> None:
    cfg = make_session("pruning=structured").rc.pruning
    with pytest.raises(ConfigError, match=r"channels of layer 'conv2' safe: they reach method "
                                          r"\.roll\(\)"):
        check(UserNet("roll"), cfg, SPEC.example_input())
    excluded = make_session("pruning=structured", "pruning.exclude=[conv2]").rc.pruning
    check(UserNet("roll"), excluded, SPEC.example_input())  # conv1 and fc1 are fine


def test_masking_channels_is_allowed_where_removing_them_is_not(prune) -> None:
    """Zeroing a layer's own channels is safe whatever they reach; only its rows are masked
    (the consumers behind the roll are not known for sure)."""
    model, masks, session = prune("pruning=structured", "pruning.physical=false",
                                  model=UserNet("roll"))
    conv2_rows = (model.conv2.weight != 0).flatten(1).any(1)
    assert model.conv2.weight.shape == (12, 12, 3, 3) and int(conv2_rows.sum()) == 6
    assert "conv1" in masks.masks and "conv2" in masks.masks
    assert session.extra_metrics["structured_physical"] == 0.0
    assert session.extra_metrics["channels_removed_fraction"] == pytest.approx(0.5, abs=0.05)


def test_untraceable_model_is_refused(make_session) -> None:
    class Dynamic(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.flatten(1)) if x.sum() > 0 else self.fc(x.flatten(1)) * 2

    cfg = make_session("pruning=structured").rc.pruning
    with pytest.raises(ConfigError, match=r"needs a model torch\.fx can trace"):
        check(Dynamic(), cfg, SPEC.example_input())


@pytest.mark.parametrize("mode", ["none", "dynamic_int8"])
def test_artifact_reloads_the_smaller_model(prune, tmp_path, mode) -> None:
    model, _, session = prune("model=resnet" if mode == "none" else "model=lenet5",
                              "pruning=structured")
    model.eval()
    qcfg = QUANTIZERS.build_config({"mode": mode})
    final = QUANTIZERS.get(mode).handler.quantize(model, qcfg, session).model
    path = tmp_path / "m.safetensors"
    save_artifact(final, path, model_cfg=session.rc.model, spec=SPEC, quant_cfg=qcfg,
                  transforms=session.transforms)
    loaded, meta = load_artifact(path)
    x = session.data.test_x[:16]
    with torch.no_grad():
        assert torch.equal(final(x), loaded(x))
    assert meta["transforms"][0]["kind"] == "channels"


def test_iterative_structured_keeps_removing_the_same_channels(prune) -> None:
    model, _, session = prune("model=lenet5", "pruning=structured", "pruning.schedule=iterative",
                              "pruning.rounds=2", "pruning.sparsity=0.75", "finetune.epochs=1",
                              "data.limit=128")
    assert model.conv2.weight.shape[0] == 4 and model.fc1.weight.shape == (30, 16)
    assert session.extra_metrics["channels_removed_fraction"] == pytest.approx(
        (4 + 12 + 90 + 63) / (6 + 16 + 120 + 84))


def test_structured_handler_is_registered() -> None:
    assert "structured" in PRUNERS.names()


@pytest.mark.parametrize(("channels", "target", "round_to", "removed"), [
    (16, 0.5, 1, 8), (120, 0.5, 8, 56), (84, 0.5, 8, 36), (6, 0.5, 4, 2), (6, 0.5, 8, 0),
    (16, 0.9, 4, 12), (10, 0.99, 1, 9)])
def test_round_to_rounds_the_kept_channels_up(channels, target, round_to, removed) -> None:
    assert removed_count(channels, target, round_to) == removed


def test_round_to_keeps_multiples_and_the_masked_function(prune) -> None:
    removed, masked, _, session = _removed_and_masked(prune, "model=lenet5",
                                                      "pruning.round_to=8")
    kept = {n: m.weight.shape[0] for n, m in removed.named_modules()
            if isinstance(m, nn.Conv2d | nn.Linear) and n != "fc3"}
    assert kept == {"conv1": 6, "conv2": 8, "fc1": 64, "fc2": 48}  # 6 < 8: conv1 left whole
    x = session.data.test_x[:32]
    with torch.no_grad():
        assert torch.allclose(removed(x), masked(x), atol=1e-5)


def test_round_to_must_be_a_positive_integer(make_session) -> None:
    with pytest.raises(ConfigError, match=r"pruning.round_to=0 is out of range"):
        make_session("pruning=structured", "pruning.round_to=0")


def test_folded_batchnorm_computes_the_same_and_reloads(prune, tmp_path) -> None:
    model, _, session = prune("model=resnet", "pruning=structured")
    torch.manual_seed(1)
    for m in model.modules():  # non-trivial statistics, as after training
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_()
    model.eval()
    folded = copy.deepcopy(model)
    record = fold_batchnorm_(folded, SPEC.example_input())
    assert len(record["pairs"]) == 9 and isinstance(folded.layer2.shortcut[1], nn.Identity)
    x = session.data.test_x[:16]
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), atol=1e-4)
    qcfg = QUANTIZERS.build_config({"mode": "none"})
    path = tmp_path / "m.safetensors"
    save_artifact(folded, path, model_cfg=session.rc.model, spec=SPEC, quant_cfg=qcfg,
                  transforms=[*session.transforms, record])
    loaded, meta = load_artifact(path)
    assert [t["kind"] for t in meta["transforms"]] == ["channels", "fold_bn"]
    with torch.no_grad():
        assert torch.equal(loaded(x), folded(x))


def test_batchnorm_after_a_shared_or_reused_output_is_not_folded() -> None:
    groups_net = UserNet()  # bn1's conv feeds only bn1; conv2 -> bn2 too
    assert conv_bn_pairs(groups_net, SPEC.example_input()) == [("conv1", "bn1"),
                                                               ("conv2", "bn2")]

    class Branch(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return self.bn(y) + y  # conv output also used unnormalized: folding would be wrong

    assert conv_bn_pairs(Branch(), SPEC.example_input()) == []


class MobileNetish(nn.Module):
    """MobileNet-style: conv-bn-relu6, depthwise separable blocks, and an Inception-style
    torch.cat of two branches (one through a depthwise conv) before the classifier."""

    def __init__(self) -> None:
        super().__init__()

        def cbr(cin: int, cout: int, k: int, groups: int = 1) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups,
                                           bias=False), nn.BatchNorm2d(cout), nn.ReLU6())

        self.stem = cbr(1, 16, 3)
        self.dw1, self.pw1 = cbr(16, 16, 3, groups=16), cbr(16, 32, 1)
        self.a = cbr(32, 16, 1)
        self.b_dw, self.b_pw = cbr(32, 32, 3, groups=32), cbr(32, 16, 1)
        self.bn = nn.BatchNorm2d(32)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pw1(self.dw1(self.stem(x)))
        y = torch.relu(self.bn(torch.cat([self.a(x), self.b_pw(self.b_dw(x))], 1)))
        return self.fc(torch.flatten(self.pool(y), 1))


def mobilenetish() -> nn.Module:
    """Random BatchNorm statistics and affine terms: a masked channel whose norm were left
    alone would emit a clear offset."""
    torch.manual_seed(0)
    model = MobileNetish()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.01, 2)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -1, 1)
    return model


def test_depthwise_convs_join_their_input_group_and_cat_splits_the_range() -> None:
    groups = channel_groups(mobilenetish(), SPEC.example_input())
    by_producer = {p: g for g in groups for p in g.producers}
    stem = by_producer["stem.0"]
    assert stem.depthwise == [("dw1.0", 0)] and stem.blocked is None
    assert {n for n, _, _ in stem.norms} == {"stem.1", "dw1.1"}
    assert [d for d, _ in by_producer["pw1.0"].depthwise] == ["b_dw.0"]
    # the two branches: their halves of the cat, at offsets 0 and 16, in the norm and the fc
    assert ("bn", 1, 0) in by_producer["a.0"].norms and ("fc", 1, 0) in by_producer["a.0"].consumers
    assert ("bn", 1, 16) in by_producer["b_pw.0"].norms
    assert ("fc", 1, 16) in by_producer["b_pw.0"].consumers


def test_masked_mobilenet_with_batchnorm_computes_what_the_removed_one_does(prune) -> None:
    """Masking zeroes a channel's bias, BatchNorm and depthwise filter too: masked channels
    output exactly zero, so masked and removed models agree."""
    removed, masked, _, session = _removed_and_masked(prune, model=mobilenetish())
    x = session.data.test_x[:32]
    with torch.no_grad():
        assert torch.allclose(removed(x), masked(x), atol=1e-4)
        out = masked.dw1(masked.stem(x))  # after the depthwise conv's BatchNorm and ReLU6
    kept = session.transforms[0]["layers"]["dw1.0"]["channels"]
    dropped = sorted(set(range(16)) - set(kept))
    assert len(dropped) == 8 and out[:, dropped].abs().max() == 0


def test_masked_channels_stay_exactly_zero_through_fine_tuning(prune) -> None:
    """Fine-tuning in train mode moves BatchNorm statistics (a masked channel's variance
    collapses); its zeroed affine terms keep the output at zero anyway."""
    model, masks, session = prune("pruning=structured", "pruning.physical=false",
                                  "finetune.epochs=1", model=mobilenetish())
    assert {"stem.1.weight", "stem.1.bias", "stem.1.running_mean", "dw1.0"} <= set(masks.masks)
    model.eval()
    with torch.no_grad():
        out = model.pw1(model.dw1(model.stem(session.data.test_x[:32])))
    dead = (model.pw1[0].weight == 0).flatten(1).all(1)
    assert int(dead.sum()) == 16 and out[:, dead].abs().max() == 0


def test_mobilenet_block_shrinks_with_its_depthwise_convs_and_concatenation(prune) -> None:
    removed, _, _, session = _removed_and_masked(prune, model=mobilenetish())
    assert removed.dw1[0].weight.shape == (8, 1, 3, 3) and removed.dw1[0].groups == 8
    assert removed.pw1[0].weight.shape == (16, 8, 1, 1)
    assert removed.b_dw[0].weight.shape == (16, 1, 3, 3) and removed.b_dw[1].num_features == 16
    assert removed.a[0].weight.shape == (8, 16, 1, 1) and removed.b_pw[0].weight.shape[0] == 8
    assert removed.bn.num_features == 16 and removed.fc.weight.shape == (10, 16)
    # all 16 + 32 + 16 + 16 hidden channels can be pruned; half are
    assert session.extra_metrics["channels_removed_fraction"] == pytest.approx(0.5)
    x = session.data.test_x[:4]
    assert removed(x).shape == (4, 10)


def test_mobilenet_block_shrinks_as_torch_pruning_does() -> None:
    """The same channel counts per layer as Torch-Pruning at the same ratio (benchmarks/
    requirements.txt; which channels go may differ: its importance spans the whole group)."""
    tp = pytest.importorskip("torch_pruning")
    from compression.pruning.structured import remove_channels_

    ours, theirs = mobilenetish().eval(), mobilenetish().eval()
    example = SPEC.example_input(1)
    remove_channels_(ours, 0.5, example)
    tp.pruner.MagnitudePruner(theirs, example, importance=tp.importance.MagnitudeImportance(p=1),
                              pruning_ratio=0.5, ignored_layers=[theirs.fc]).step()
    shapes = {n: tuple(m.weight.shape) for n, m in ours.named_modules()
              if isinstance(m, nn.Conv2d | nn.Linear | nn.BatchNorm2d)}
    assert shapes == {n: tuple(m.weight.shape) for n, m in theirs.named_modules()
                      if isinstance(m, nn.Conv2d | nn.Linear | nn.BatchNorm2d)}


def test_blocked_and_grouped_channels_count_in_the_removed_fraction(prune) -> None:
    """conv2's channels reach an op not followed (kept, but hidden channels all the same):
    6 of conv1's 12 and 10 of fc1's 20 removed out of 12 + 12 + 20."""
    _, _, session = prune("pruning=structured", "pruning.exclude=[conv2]", model=UserNet("roll"))
    assert session.extra_metrics["channels_removed_fraction"] == pytest.approx(16 / 44)


def test_grouped_conv_keeps_its_channels_and_the_rest_is_pruned(prune) -> None:
    class Grouped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
            self.conv2 = nn.Conv2d(8, 8, 3, padding=1, groups=2)  # blocks of 4 channels
            self.conv3 = nn.Conv2d(8, 8, 1)
            self.fc = nn.Linear(8 * 64, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.flatten(torch.relu(self.conv3(self.conv2(self.conv1(x)))), 1))

    model, _, _ = prune("pruning=structured", model=Grouped())
    assert model.conv1.weight.shape[0] == 8 and model.conv2.weight.shape == (8, 4, 3, 3)
    assert model.conv3.weight.shape[0] == 4 and model.fc.weight.shape == (10, 4 * 64)
