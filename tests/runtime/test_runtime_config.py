"""The runtime config group: one line for a bad value, before anything runs."""

from __future__ import annotations

import pytest

from compression.config.run import RunConfig
from compression.core.errors import ConfigError
from compression.runtime.base import OrtConfig


@pytest.mark.parametrize(("overrides", "says"), [
    (["runtime=onnxruntime", "runtime.opset=9"], "runtime.opset=9 is out of range"),
    (["runtime=onnxruntime", "runtime.exporter=jit"], "runtime.exporter='jit' is not a known"),
    (["runtime=onnxruntime", "runtime.dynamic_int8=fast"],
     "runtime.dynamic_int8='fast' is not a known"),
    (["runtime=executorch", "+runtime.dynamic_int8=ort"],
     "runtime.dynamic_int8 is not a valid key"),
    (["runtime.name=tflite"], "runtime.name='tflite' is not a known value; allowed: "
                              "executorch, onnxruntime, torch"),
    (["runtime=torch", "+runtime.opset=18"], "runtime.opset is not a valid key"),
])
def test_bad_runtime_values_fail_in_one_line(compose_cfg, overrides, says) -> None:
    with pytest.raises(ConfigError, match=says) as info:
        RunConfig.from_cfg(compose_cfg(*overrides))
    assert "\n" not in str(info.value)


def test_default_is_torch_and_onnxruntime_records_its_settings(compose_cfg) -> None:
    assert RunConfig.from_cfg(compose_cfg()).runtime.name == "torch"
    rc = RunConfig.from_cfg(compose_cfg("runtime=onnxruntime"))
    assert rc.runtime == OrtConfig(name="onnxruntime", opset=18, exporter="dynamo",
                                   dynamic_int8="torch")
    assert rc.params()["runtime"] == {"name": "onnxruntime", "opset": 18, "exporter": "dynamo",
                                      "dynamic_int8": "torch"}
