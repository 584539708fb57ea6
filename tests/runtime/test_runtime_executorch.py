"""runtime=executorch: the model lowered to an XNNPACK .pte, run by ExecuTorch's runtime for
accuracy and timing; what XNNPACK cannot run refused before training."""

from __future__ import annotations

import pytest

from compression.core.errors import ConfigError
from compression.run import pipeline


@pytest.mark.parametrize("overrides", [
    ["model=lenet5", "pruning=structured", "pruning.sparsity=0.5"],
    pytest.param(["model=mlp", "quantization=dynamic_int8"], marks=pytest.mark.slow),
    pytest.param(["model=resnet", "quantization=static_int8"], marks=pytest.mark.slow),
    pytest.param(["model=mlp", "quantization=fp16"], marks=pytest.mark.slow),
])
def test_runs_in_executorch(run_metrics, tmp_path, overrides) -> None:
    m = run_metrics("runtime=executorch", *overrides)
    [file] = (tmp_path / "artifacts").glob("local-*/model.pte")
    assert m["rt_size_bytes"] == file.stat().st_size
    assert abs(m["rt_accuracy"] - m["accuracy"]) <= 0.01
    assert m["rt_latency_ms"] > 0 and m["rt_speedup"] > 0 and m["rt_threads"] == 1
    assert not list((tmp_path / "artifacts").glob("local-*/baseline_*.pte"))  # cleaned up


@pytest.mark.parametrize(("overrides", "says"), [
    (["quantization=lowbit"], "cannot run quantization.mode=lowbit"),
    (["~model", "+model._target_=runtime_factories.kthvalue_model"], "runtime=executorch"),
])
def test_refused_before_training(compose_cfg, overrides, says) -> None:
    with pytest.raises(ConfigError, match=says) as info:
        pipeline.check(compose_cfg("runtime=executorch", *overrides))
    assert "\n" not in str(info.value)
