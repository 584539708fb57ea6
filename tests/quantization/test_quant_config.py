"""Bad quantization settings fail in one line before any work; runs log the per-layer error."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from compression.config.run import RunConfig
from compression.core.errors import ConfigError
from compression.quantization import QUANTIZERS
from compression.run import pipeline


def test_every_mode_has_a_config_file_and_a_handler() -> None:
    """Modes are discovered (no list to keep): each registered one has its YAML and back."""
    conf = Path(__file__).parents[2] / "conf" / "quantization"
    assert sorted(p.stem for p in conf.glob("*.yaml")) == QUANTIZERS.names()
    assert {"none", "fp16", "bf16", "dynamic_int8", "static_int8", "qat_int8",
            "lowbit"} <= set(QUANTIZERS.names())


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["quantization=lowbit", "quantization.bits=9"], "quantization.bits=9 is not a known"),
        (["quantization=lowbit", "quantization.bits=1"], "allowed: 2, 3, 4, 5, 6, 7, 8, ternary"),
        (["quantization=lowbit", "quantization.granularity=row"], "quantization.granularity"),
        (["quantization=lowbit", "quantization.group_size=0"], "quantization.group_size=0"),
        (["quantization=lowbit", "quantization.backend=torchao"], "(for mode lowbit)"),
        (["quantization=dynamic_int8", "quantization.backend=torchao",
          "quantization.engine=onednn"], "quantization.engine=onednn applies to backend torch_ao"),
        (["quantization=dynamic_int8", "quantization.layers=[conv]"],
         "no dynamic int8 kernel in backend torch_ao; allowed: linear, lstm, gru"),
        (["quantization=dynamic_int8", "quantization.backend=torchao", "quantization.layers=[gru]"],
         "no dynamic int8 kernel in backend torchao; allowed: linear"),
        (["quantization=dynamic_int8", "quantization.backend=tflite"],
         "allowed: torch_ao, torchao"),
        (["quantization=dynamic_int8", "quantization.engine=arm"], "quantization.engine='arm'"),
        (["quantization=static_int8", "quantization.backend=torchao"],
         "quantization.backend (for mode static_int8)='torchao'"),
        (["quantization=static_int8", "quantization.observer=kl"], "quantization.observer='kl'"),
        (["quantization=static_int8", "quantization.percentile=100"], "quantization.percentile"),
        (["quantization=static_int8", "quantization.engine=onednn", "quantization.scheme=affine"],
         "require weight zero_point 0"),
        (["quantization=qat_int8", "quantization.epochs=0"], "quantization.epochs=0"),
        (["quantization=qat_int8", "+quantization.observer=histogram"],
         "quantization.observer is not a valid key here"),
    ],
)
def test_bad_values_fail_in_one_line(compose_cfg, overrides, needle) -> None:
    with pytest.raises(ConfigError) as err:
        RunConfig.from_cfg(compose_cfg(*overrides))
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["model=lenet5", "quantization=dynamic_int8", "quantization.layers=[lstm]"],
         "has no lstm layer"),
        (["+model._target_=quant_factories.untraceable", "model.name=untraceable",
          "quantization=static_int8"], "needs a torch.fx-traceable model"),
        (["+model._target_=quant_factories.conv1d_model", "model.name=c1d",
          "quantization=lowbit"], "supports Linear and Conv2d"),
    ],
)
def test_unsupported_model_fails_before_training(compose_cfg, tmp_path, overrides,
                                                 needle) -> None:
    cfg = compose_cfg("tracking=off", *overrides)
    with pytest.raises(ConfigError, match=needle):
        pipeline.run(cfg)
    assert not (tmp_path / "cache").exists()  # no baseline was trained


@pytest.mark.parametrize("mode", [["static_int8", "quantization.calibration_batches=2"],
                                  ["lowbit"]], ids=["static_int8", "lowbit"])
def test_run_writes_the_layer_error_to_the_csv(compose_cfg, tmp_path, mode) -> None:
    pipeline.run(compose_cfg("tracking=off", f"quantization={mode[0]}", *mode[1:],
                             "measure.latency=false"))
    (layers_csv,) = (tmp_path / "artifacts").glob("*/layers.csv")
    rows = list(csv.DictReader(layers_csv.open()))
    assert {r["layer"] for r in rows} == {"fc1", "fc2", "fc3"}
    for r in rows:
        assert 10 < float(r["quant_sqnr_db"]) < math.inf  # int8 ~40 dB, 4-bit ~20 dB
        assert float(r["quant_mse"]) > 0
