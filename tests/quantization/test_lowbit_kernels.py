"""lowbit's execution kernels (quantization.kernel): every kernel computes what `unpack` computes
(bit-exact for `cached`, within fp32 rounding for torch's int8/int4 kernels), eligibility is
checked, resident bytes are counted, reloaded codes are never served from a stale cache, and
`kernel=auto` picks per layer by timing, records the picks and reloads with them."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from compression.artifact.format import load_artifact, save_artifact, state_bytes
from compression.models.build import ModelConfig
from compression.quantization import QUANTIZERS
from compression.quantization import lowbit_kernels as kernels
from compression.quantization.lowbit import kernel_tag
from compression.quantization.lowbit_modules import LowBitLayer, lowbit_from


def _layer(out: int, inp: int, bits: int | str, group: int | None, seed: int = 0) -> LowBitLayer:
    g = torch.Generator().manual_seed(seed)
    fc = nn.Linear(inp, out)
    with torch.no_grad():
        fc.weight.copy_(torch.randn(out, inp, generator=g))
        fc.weight[torch.rand(out, inp, generator=g) < 0.5] = 0  # pruned zeros too
        fc.bias.copy_(torch.randn(out, generator=g))
    layer = lowbit_from(fc, bits, group)
    layer.load_float(fc.weight, fc.bias)
    return layer


def _as(layer: LowBitLayer, kernel: str) -> LowBitLayer:
    out = copy.deepcopy(layer)
    out.set_kernel(kernel)
    return out


@pytest.mark.parametrize(("bits", "group", "expected"), [
    (4, 32, {"unpack", "cached", "int4pack"}),
    (4, None, {"unpack", "cached", "int8pack", "int4pack"}),
    ("ternary", 32, {"unpack", "cached", "int4pack"}),
    (2, None, {"unpack", "cached", "int8pack", "int4pack"}),
    (8, None, {"unpack", "cached", "int8pack"}),  # 8-bit codes: no nibbles
    (3, 16, {"unpack", "cached"}),  # groups of 16: neither torch kernel
])
def test_every_kernel_computes_what_unpack_computes(bits, group, expected) -> None:
    layer = _layer(32, 64, bits, group)
    assert set(kernels.eligible(layer)) == expected
    x = torch.randn(2, 5, 64)  # a leading batch shape, as Linear takes
    with torch.inference_mode():
        ref = layer(x)
        for kernel in expected:
            y = _as(layer, kernel)(x)
            assert y.shape == ref.shape
            if kernel == "cached":
                assert torch.equal(y, ref)
            else:  # the integer kernels sum in another order
                torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))


def test_shapes_the_torch_kernels_cannot_run_fall_back_to_unpack() -> None:
    classifier = _layer(10, 64, 4, 32)  # 10 outputs: not divisible by 16
    assert "int4pack" not in kernels.eligible(classifier)
    assert kernels.resolve(classifier, "int4pack") == "unpack"
    with pytest.raises(ValueError, match="int4pack"):
        classifier.set_kernel("int4pack")
    conv = lowbit_from(nn.Conv2d(3, 16, 3), 4, None)
    assert kernels.eligible(conv) == ["unpack", "cached"]  # the torch kernels are matmuls


def test_conv_cached_is_bit_exact() -> None:
    conv = nn.Conv2d(3, 16, 3)
    layer = lowbit_from(conv, 4, 32)
    layer.load_float(conv.weight, conv.bias)
    x = torch.randn(2, 3, 8, 8)
    with torch.inference_mode():
        assert torch.equal(_as(layer, "cached")(x), layer(x))


def test_resident_bytes_count_what_the_kernel_keeps() -> None:
    layer = _layer(32, 64, 4, 32)
    packed = state_bytes(layer)
    assert packed == 32 * 64 // 2 + 32 * 2 * 2 + 32 * 4  # 4-bit codes, fp16 scales, fp32 bias
    assert state_bytes(_as(layer, "cached")) == packed + 32 * 64 * 4  # + the fp32 weight
    int8 = _as(_layer(32, 64, 4, None), "int8pack")
    assert state_bytes(int8) == state_bytes(_layer(32, 64, 4, None)) + 32 * 64 + 32 * 4


@pytest.mark.parametrize("kernel", ["cached", "int4pack"])
def test_loaded_codes_replace_the_prepared_state(kernel) -> None:
    a, b = _layer(32, 64, 4, 32, seed=0), _layer(32, 64, 4, 32, seed=1)
    layer = _as(a, kernel)
    x = torch.randn(3, 64)
    with torch.inference_mode():
        layer(x)  # prepares the kernel's state from a's codes
        layer.load_state_dict(b.state_dict())
        torch.testing.assert_close(layer(x), b(x), rtol=1e-5, atol=1e-4)


def test_auto_picks_per_layer_records_and_reloads(trained, session, tmp_path) -> None:
    model = trained("mlp")
    cfg = QUANTIZERS.build_config({"mode": "lowbit", "bits": 4, "granularity": "channel"})
    assert cfg.kernel == "auto"
    result = QUANTIZERS.get("lowbit").handler.quantize(model, cfg, session)
    picks = result.config.layer_kernels
    layers = {n: m for n, m in result.model.named_modules() if isinstance(m, LowBitLayer)}
    assert set(picks) == set(layers)
    assert all(layers[n].kernel == k and k in kernels.eligible(layers[n])
               for n, k in picks.items())
    assert result.tags["lowbit_kernel"] == kernel_tag(picks)
    assert result.metrics["quant_auto_picked_ms"] <= result.metrics["quant_auto_unpack_ms"]
    assert cfg.layer_kernels is None  # the config asked for is left as it was

    path = tmp_path / "m.safetensors"
    save_artifact(result.model, path, model_cfg=ModelConfig(name="mlp"),
                  spec=session.data.spec, quant_cfg=result.config)
    reloaded, meta = load_artifact(path)
    assert meta["quantization"]["layer_kernels"] == picks
    assert {n: m.kernel for n, m in reloaded.named_modules()
            if isinstance(m, LowBitLayer)} == picks
    x = session.data.test_x[:32]
    with torch.inference_mode():
        torch.testing.assert_close(reloaded(x), result.model(x), rtol=1e-5, atol=1e-5)


def test_a_named_kernel_runs_where_it_can(trained, session) -> None:
    model = trained("mlp")
    cfg = QUANTIZERS.build_config({"mode": "lowbit", "bits": 4, "granularity": "channel",
                                   "kernel": "int8pack"})
    result = QUANTIZERS.get("lowbit").handler.quantize(model, cfg, session)
    assert set(result.config.layer_kernels.values()) == {"int8pack"}  # every Linear can
    assert result.tags["lowbit_kernel"] == "int8pack"
    assert not [m for m in result.metrics if m.startswith("quant_auto_")]  # nothing timed
    unpack = QUANTIZERS.get("lowbit").handler.quantize(
        model, QUANTIZERS.build_config({"mode": "lowbit", "bits": 4, "granularity": "channel",
                                        "kernel": "unpack"}), session).model
    x = session.data.test_x[:32]
    with torch.inference_mode():
        torch.testing.assert_close(result.model(x), unpack(x), rtol=1e-5, atol=1e-5)


def test_kernel_tag_names_layers_only_when_they_differ() -> None:
    assert kernel_tag({"fc1": "cached", "fc2": "cached"}) == "cached"
    assert kernel_tag({"fc1": "int8pack", "fc2": "unpack", "fc3": "int8pack"}) \
        == "int8pack: fc1, fc3; unpack: fc2"


def test_bad_kernel_is_one_line() -> None:
    from compression.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"quantization\.kernel"):
        QUANTIZERS.build_config({"mode": "lowbit", "kernel": "fastest"})
