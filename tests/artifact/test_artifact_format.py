"""Artifact format 2: every position coding and codec reloads bit-exact weights through the real
file; the bytes are itemized honestly (payload + header = file); the header stays small; format-1
files still load; a tampered stream table fails in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from compression.artifact.coding.codecs import CODECS
from compression.artifact.coding.positions import KINDS
from compression.artifact.format import (
    META_KEY,
    ExportConfig,
    itemize,
    load_artifact,
    rewrite_meta,
    save_artifact,
    state_dict_bytes,
)
from compression.core.errors import ArtifactError, ConfigError
from compression.data import DataSpec
from compression.models.build import ModelConfig, build_model, prunable_layers
from compression.pruning.unstructured import magnitude_masks
from compression.quantization import QUANTIZERS

SPEC = DataSpec("digits", 1, 8, 10)
NONE = QUANTIZERS.build_config({"mode": "none"})


def _model(sparsity: float, name: str = "mlp", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(ModelConfig(name=name), SPEC).eval()
    if sparsity:
        magnitude_masks(prunable_layers(model), sparsity, "global").apply(model)
    return model


def _save(path: Path, model, quant=NONE, name="mlp", **export) -> Path:
    save_artifact(model, path, model_cfg=ModelConfig(name=name), spec=SPEC, quant_cfg=quant,
                  export=ExportConfig(**export))
    return path


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        x, y = sa[k], sb[k]
        if isinstance(x, torch.Tensor) and x.is_quantized:
            assert torch.equal(x.int_repr(), y.int_repr()) and x.qscheme() == y.qscheme()
        elif isinstance(x, torch.Tensor):  # bit-exact, a pruned -0.0 aside (it is a zero)
            x = torch.where(x == 0, torch.zeros_like(x), x)
            y = torch.where(y == 0, torch.zeros_like(y), y)
            assert torch.equal(x.flatten().view(torch.uint8), y.flatten().view(torch.uint8)), k


@pytest.mark.parametrize("codec", sorted(CODECS))
@pytest.mark.parametrize("where", ["auto", *KINDS])
@pytest.mark.parametrize("sparsity", [0.0, 0.6, 0.97])
def test_every_coding_and_codec_reloads_bit_exact_weights(tmp_path, codec, where,
                                                          sparsity) -> None:
    model = _model(sparsity, seed=int(sparsity * 10))
    loaded, meta = load_artifact(_save(tmp_path / "m.safetensors", model, codec=codec,
                                       positions=where))
    _same_weights(model, loaded)
    if where != "auto" and sparsity:
        assert meta["entries"]["fc1.weight"]["enc"] == where
    assert meta["codec"] == codec


def _fill_odd(model: torch.nn.Module, seed: int) -> None:
    """Random values; random sparsity patterns (not by magnitude) where a tensor is sparse."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            if name == "zeros" or not t.numel():
                continue
            v = torch.randn(t.shape, generator=g) * 3
            if name in ("sparse", "codes", "halves"):
                v = v * (torch.rand(t.shape, generator=g) < 0.2)
            t.copy_(v if name != "one_zero" else torch.zeros_like(v))


ODD = ModelConfig.from_dict({"_target_": "factories.odd_tensors"})


@pytest.mark.parametrize("codec", sorted(CODECS))
@pytest.mark.parametrize("where", ["auto", *KINDS])
@pytest.mark.parametrize("seed", [0, 1])
def test_empty_one_element_dense_and_random_sparse_tensors_reload_bit_exact(
        tmp_path, codec, where, seed) -> None:
    model = build_model(ODD, SPEC)
    _fill_odd(model, seed)
    path = tmp_path / "m.safetensors"
    save_artifact(model, path, model_cfg=ODD, spec=SPEC, quant_cfg=NONE,
                  export=ExportConfig(codec=codec, positions=where))
    loaded, meta = load_artifact(path, ODD)
    _same_weights(model, loaded)
    assert loaded.scalar.shape == () and loaded.empty.shape == (0, 5)
    assert loaded.codes.dtype == torch.int8 and loaded.halves.dtype == torch.float16
    if where != "auto":  # big enough to be coded sparse: the coding asked for
        assert meta["entries"]["sparse"]["enc"] == where


@pytest.mark.parametrize("codec", sorted(CODECS))
@pytest.mark.parametrize("where", ["bitmask", "delta", "csr"])
@pytest.mark.parametrize("mode", ["dynamic_int8", "kmeans", "lowbit"])
def test_quantized_models_reload_exactly_through_every_coding(tmp_path, codec, where,
                                                              mode) -> None:
    quant = QUANTIZERS.build_config({"mode": mode})
    q = QUANTIZERS.get(mode).handler.quantize(_model(0.9), quant, None).model
    loaded, _ = load_artifact(_save(tmp_path / "m.safetensors", q, quant, codec=codec,
                                    positions=where))
    _same_weights(q, loaded)
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(q(x), loaded(x))


def test_static_int8_zero_points_survive_sparse_codings(tmp_path) -> None:
    """Affine weights hold a pruned 0.0 as their zero point (the coder's fill)."""
    quant = QUANTIZERS.build_config({"mode": "static_int8", "scheme": "affine",
                                     "engine": "fbgemm"})

    class Calib:  # static calibration only needs batches
        def calibration_batches(self, n):
            return [torch.randn(16, 1, 8, 8) for _ in range(n)]

    model = _model(0.9, "lenet5")
    q = QUANTIZERS.get("static_int8").handler.quantize(model, quant, Calib()).model
    loaded, meta = load_artifact(_save(tmp_path / "m.safetensors", q, quant, name="lenet5",
                                       positions="delta"))
    _same_weights(q, loaded)
    fills = [e for e in meta["entries"].values() if e.get("fill") == "zero_point"]
    assert fills and all(e["enc"] == "delta" for e in fills)


def test_the_smallest_coding_wins_and_the_codec_pays(tmp_path) -> None:
    model = _model(0.95)
    sizes = {where: _save(tmp_path / f"{where}.safetensors", model, positions=where)
             .stat().st_size for where in ["auto", *KINDS]}
    assert sizes["auto"] <= min(sizes.values())
    assert sizes["auto"] < 0.6 * sizes["bitmask"] or sizes["auto"] < 0.15 * sizes["dense"]
    coded = _save(tmp_path / "h.safetensors", model, codec="huffman").stat().st_size
    assert coded < sizes["auto"]


def test_bytes_are_itemized_and_the_header_is_under_2_percent(tmp_path) -> None:
    """mlp at 28x28 (266K params), 92% sparse, 4-bit shared weights, Huffman: ~50x smaller
    than dense fp32; its header (safetensors framing + deflated JSON) stays under 2%."""
    spec = DataSpec("fashion_mnist", 1, 28, 10)
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="mlp"), spec).eval()
    magnitude_masks(prunable_layers(model), 0.92, "global").apply(model)
    quant = QUANTIZERS.build_config({"mode": "kmeans", "bits": 4})
    q = QUANTIZERS.get("kmeans").handler.quantize(model, quant, None).model
    path = tmp_path / "m.safetensors"
    stored = save_artifact(q, path, model_cfg=ModelConfig(name="mlp"), spec=spec,
                           quant_cfg=quant, export=ExportConfig(codec="huffman"))
    parts = itemize(path)
    assert parts["payload_bytes"] + parts["header_bytes"] == path.stat().st_size
    assert parts["payload_bytes"] == sum(stored.values())
    assert parts["header_bytes"] <= 0.02 * path.stat().st_size
    assert state_dict_bytes(model) > 4 * sum(p.numel() for p in model.parameters())
    assert path.stat().st_size * 40 < state_dict_bytes(model)


def test_a_format_1_file_still_loads(tmp_path) -> None:
    model = _model(0.9)
    flat = {k: v.contiguous() for k, v in model.state_dict().items()}
    w = flat.pop("fc1.weight")
    nz = (w != 0).flatten()
    tensors = {**flat, "fc1.weight::bits": torch.from_numpy(np.packbits(nz.numpy())),
               "fc1.weight::values": w.flatten()[nz].clone()}
    entries = {k: {"kind": "tensor", "enc": "dense"} for k in flat}
    entries["fc1.weight"] = {"kind": "tensor", "enc": "bitmask", "shape": list(w.shape)}
    meta = {"format": "compression-artifact/1", "model": {"name": "mlp", "width": 1.0},
            "spec": {"name": "digits", "in_channels": 1, "image_size": 8, "num_classes": 10},
            "quantization": {"mode": "none"}, "transforms": [], "entries": entries}
    path = tmp_path / "v1.safetensors"
    save_file(tensors, str(path), metadata={META_KEY: json.dumps(meta)})
    loaded, _ = load_artifact(path)
    _same_weights(model, loaded)
    assert itemize(path)["payload_bytes"] == sum(t.numel() * t.element_size()
                                                 for t in tensors.values())


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["entries"]["fc1.weight"]["s"][0].__setitem__(3, 10**9), "runs past the end"),
    (lambda m: m.update(codec="pickle"), "unknown codec"),
    (lambda m: m["entries"]["fc1.weight"]["s"][0].__setitem__(1, "load"), "unknown dtype"),
    (lambda m: m["entries"]["fc1.bias"].pop("s"), "not listed"),
])
def test_a_tampered_stream_table_fails_in_one_line(tmp_path, edit, message) -> None:
    path = _save(tmp_path / "m.safetensors", _model(0.9), codec="huffman")
    rewrite_meta(path, edit)
    with pytest.raises(ArtifactError, match=message) as err:
        load_artifact(path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("bad", [{"codec": "gzip"}, {"positions": "coo"}])
def test_bad_export_settings_are_refused(bad) -> None:
    with pytest.raises(ConfigError, match="export"):
        ExportConfig(**bad)
