"""Methods and modes are discovered, not listed: a new module registers a method, declares its
metrics, and the config accepts both (compression/core/registry.py)."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import compression.pruning
from compression.config import run as config
from compression.core.registry import discover
from compression.pruning import PRUNERS
from compression.quantization import QUANTIZERS
from compression.run import pipeline

TOY = '''
from dataclasses import dataclass

from compression.pruning.base import PRUNERS, MaskSet, PruneResult, PruningConfig


@dataclass
class ToyConfig(PruningConfig):
    method: str = "{name}"


@PRUNERS.register("{name}", ToyConfig, metrics=("{name}_layers",))
def prune_toy(model, cfg, session):
    """Zero nothing; report how many layers it saw."""
    return PruneResult(MaskSet(), metrics={{"{name}_layers": float(len(list(model.modules())))}})
'''


@pytest.fixture
def toy_method(tmp_path: Path):
    """A toy pruning method in its own module, in a folder added to the package's path."""
    name = f"toy_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(TOY.format(name=name))
    compression.pruning.__path__.append(str(tmp_path))
    try:
        yield name
    finally:
        compression.pruning.__path__.remove(str(tmp_path))
        PRUNERS.unregister(name)
        sys.modules.pop(f"compression.pruning.{name}", None)


def test_a_new_method_module_is_discovered_with_its_metrics(toy_method, compose_cfg) -> None:
    assert toy_method not in PRUNERS.names()
    found = discover(compression.pruning.__name__, compression.pruning.__path__)
    assert toy_method in found and toy_method in PRUNERS.names()
    assert f"{toy_method}_layers" in config.metric_names()  # objectives may name it
    # nothing else to edit: a run with the method and its metric as objective works
    cfg = OmegaConf.to_container(compose_cfg(f"objectives=[{toy_method}_layers]",
                                             "measure.latency=false", "tracking.enabled=false"),
                                 resolve=True)
    cfg["pruning"] = {"method": toy_method, "sparsity": 0.0}
    value = pipeline.run(cfg)
    assert value > 0


def test_every_builtin_method_and_mode_module_is_discovered() -> None:
    pruning_dir = Path(compression.pruning.__file__).parent
    modules = {p.stem for p in pruning_dir.glob("*.py") if not p.stem.startswith("_")}
    assert set(compression.pruning.MODULES) == modules
    assert {"unstructured", "structured", "lowrank", "nm", "block", "mask"} <= set(PRUNERS.names())
    assert "dynamic_int8" in QUANTIZERS.names()


def test_metrics_are_declared_by_their_handlers() -> None:
    assert PRUNERS.get("structured").metrics == ("channels_removed_fraction", "param_reduction",
                                                 "structured_physical")
    assert "quant_sqnr_db_min" in QUANTIZERS.get("lowbit").metrics
    # "none" logs no quantization-specific metric, only the stored width every mode reports
    assert QUANTIZERS.get("none").metrics == ("weight_bits",)
    # k-means codebooks do not tell a stored width per layer, so only that mode leaves it out
    untold = {m for m in QUANTIZERS.names() if "weight_bits" not in QUANTIZERS.get(m).metrics}
    assert untold == {"kmeans"}
    names = config.metric_names()
    assert "lowrank_layers" in names and "quant_sqnr_db_min" in names
    assert len(names) == len(set(names))
