"""Weight sharing (quantization=kmeans): 2^bits shared values per layer from k-means over the
nonzero weights, zeros stay zeros (also through centroid fine-tuning), and the artifact reloads
to the same outputs and accuracy."""

from __future__ import annotations

import pytest
import torch

from compression.artifact.format import ExportConfig, load_artifact, save_artifact
from compression.core.errors import ConfigError
from compression.models.build import ModelConfig, prunable_layers
from compression.pruning.unstructured import magnitude_masks
from compression.quantization import QUANTIZERS
from compression.quantization.kmeans import SharedLinear, kmeans_1d
from compression.training.loop import evaluate


def _cfg(**kw):
    return QUANTIZERS.build_config({"mode": "kmeans", **kw})


@pytest.mark.parametrize("bad", [{"bits": 1}, {"bits": 9}, {"init": "kmeans++"},
                                 {"epochs": -1}, {"layers": ["lstm"]}])
def test_bad_settings_are_refused(bad) -> None:
    with pytest.raises(ConfigError, match="quantization"):
        _cfg(**bad)


def test_linear_init_spans_the_range_and_lloyd_lowers_the_error() -> None:
    w = torch.randn(5000, generator=torch.Generator().manual_seed(0))
    start = kmeans_1d(w, 8, "linear", iterations=1)
    done = kmeans_1d(w, 8, "linear", iterations=50)
    assert torch.all(done[1:] >= done[:-1])

    def err(c):
        return float(((w[:, None] - c[None]).abs().min(1).values ** 2).mean())
    assert err(done) < err(start)
    assert float(done.min()) < -2 and float(done.max()) > 2  # the tails keep their centroids


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_a_layer_has_at_most_2_pow_bits_values_and_keeps_its_zeros(bits) -> None:
    layer = torch.nn.Linear(200, 50)
    with torch.no_grad():
        layer.weight[torch.rand_like(layer.weight) < 0.8] = 0
    shared = SharedLinear(layer.weight.shape, bits, True)
    w = shared.load_float(layer.weight, layer.bias, _cfg(bits=bits))
    assert len(w[w != 0].unique()) <= 1 << bits
    assert torch.equal(w == 0, layer.weight == 0)
    x = torch.randn(3, 200)
    assert torch.allclose(shared(x), torch.nn.functional.linear(x, w, layer.bias))


def test_centroid_fine_tuning_moves_the_codebook_and_keeps_masks(trained, session) -> None:
    model = trained("mlp")
    magnitude_masks(prunable_layers(model), 0.8, "layer").apply(model)
    handler = QUANTIZERS.get("kmeans").handler
    plain = handler.quantize(model, _cfg(bits=3), session).model
    result = handler.quantize(model, _cfg(bits=3, epochs=1, lr=1e-3), session)
    tuned = result.model
    assert not torch.equal(plain.fc1.codebook, tuned.fc1.codebook)
    assert torch.equal(tuned.fc1.codes, plain.fc1.codes)  # same assignment, pruned = code 0
    assert torch.equal(tuned.fc1.weight() == 0, model.fc1.weight == 0)
    assert tuned.fc1.tuned is None and not any(p.requires_grad for p in tuned.fc1.parameters())
    assert "quant_sqnr_db_min" in result.metrics and "quant_sqnr_db" in result.layer_extra["fc1"]
    assert set(result.metrics) <= set(QUANTIZERS.get("kmeans").metrics)  # declared


@pytest.mark.parametrize("codec", ["none", "huffman"])
def test_the_artifact_reloads_to_the_same_accuracy(trained, digits, tmp_path, codec) -> None:
    model = trained("lenet5")
    magnitude_masks(prunable_layers(model), 0.5, "global").apply(model)
    cfg = _cfg(bits=5)
    q = QUANTIZERS.get("kmeans").handler.quantize(model, cfg, None).model
    path = tmp_path / "m.safetensors"
    save_artifact(q, path, model_cfg=ModelConfig(name="lenet5"), spec=digits.spec,
                  quant_cfg=cfg, export=ExportConfig(codec=codec))
    loaded, meta = load_artifact(path)
    assert torch.equal(loaded(digits.test_x), q(digits.test_x))
    assert evaluate(loaded, digits.test_x, digits.test_y) == evaluate(q, digits.test_x,
                                                                     digits.test_y)
    fp32 = evaluate(model, digits.test_x, digits.test_y)
    assert evaluate(loaded, digits.test_x, digits.test_y) > fp32 - 0.03  # 32 values per layer
    if codec == "none":  # (an entropy coder may take whole bytes instead: smaller once coded)
        assert meta["entries"]["conv2.codes"]["vb"] == 5  # codes stored in 5 bits
    dense = sum(p.numel() * 4 for p in model.parameters())
    assert path.stat().st_size < dense / 6


def test_the_rebuilt_weight_is_kept_until_codes_or_codebook_change() -> None:
    from compression.quantization.kmeans import KMeansConfig

    torch.manual_seed(0)
    lin = torch.nn.Linear(16, 8)
    layer = SharedLinear(lin.weight.shape, 4, True)
    layer.load_float(lin.weight, lin.bias, KMeansConfig())
    bare = sum(t.numel() * t.element_size() for t in [*layer.buffers(), *layer.parameters()])
    with torch.inference_mode():
        first = layer.weight()
        assert layer.weight() is first  # kept, not rebuilt
    assert not first.is_inference()  # usable outside inference mode too
    assert layer.memory_bytes() == bare + first.numel() * 4  # model_bytes counts what is kept
    other = SharedLinear(lin.weight.shape, 4, True)
    other.load_float(2 * lin.weight, lin.bias, KMeansConfig())
    layer.load_state_dict(other.state_dict())  # new codes and codebook, written in place
    assert torch.equal(layer.weight(), other.weight())
    layer.start_tuning()  # while the codebook trains the weight is rebuilt, with its gradient
    assert layer.weight().requires_grad
