"""Compress from Python (a notebook, a script): the same Hydra config and the same pipeline as
`python train.py`, so the same validation, MLflow run and artifact.

    from compression import compress, load
    result = compress(my_model, data=(train, val, test), pruning="unstructured", sparsity=0.9,
                      quantization="dynamic_int8", train={"epochs": 5})
    result.metrics["accuracy"], result.artifact, result.model
    model = load(result.artifact, model=my_model)  # the artifact, back for inference

In-memory objects (a model instance, an unimportable factory, arrays) reach the config through
a process-local registry under a stable key; everything else is a plain Hydra override.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from compression.core.errors import ConfigError

_OBJECTS: dict[str, Any] = {}  # stable key -> a factory or the data splits


@dataclass
class Result:
    metrics: dict[str, float]  # every metric the run logged (accuracy, size_bytes, ...)
    artifact: Path  # the compressed model's file
    model: nn.Module  # the compressed model, as reloaded from `artifact`
    run_id: str | None  # the MLflow run (None with tracking disabled)
    config: Any  # the validated RunConfig


def registered_model(key: str) -> nn.Module:
    """The `_target_` of a model handed to `compress` as an object (see `_model_overrides`)."""
    if key not in _OBJECTS:
        raise ConfigError(f"model key {key!r} is not registered in this process; pass the "
                          "model (or its factory) to compress()/load() again")
    return _OBJECTS[key]()


def registered_data(key: str) -> Any:
    """The `_target_` of data handed to `compress` as arrays or Datasets."""
    if key not in _OBJECTS:
        raise ConfigError(f"data key {key!r} is not registered in this process")
    return _OBJECTS[key]


def _dotted(fn: Callable[..., Any]) -> str | None:
    """`module.qualname` when importing it gives `fn` back (a module-level function/class)."""
    module, name = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or "<" in name or module == "__main__":
        return None
    try:
        from hydra.utils import get_method

        return f"{module}.{name}" if get_method(f"{module}.{name}") is fn else None
    except Exception:  # not importable by that name: register it instead
        return None


def _source_key(obj: Any) -> str:
    """A key that is the same in every process for the same code (so a later `load` in a new
    session finds the model again, and the baseline cache is reused)."""
    target = obj if callable(obj) and not isinstance(obj, nn.Module) else type(obj)
    try:
        text = inspect.getsource(target)
    except (OSError, TypeError):
        text = ""
    name = f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', '')}"
    return hashlib.sha256(f"{name}\n{text}".encode()).hexdigest()[:16]


def _model_section(model: Any) -> tuple[dict[str, Any], nn.Module | None]:
    """The `model` config section for an importable factory, any other callable, or a model
    instance (returned too: its weights become the checkpoint, so the baseline is the model
    as it is, never retrained)."""
    if isinstance(model, nn.Module):
        key = _source_key(model)
        template = copy.deepcopy(model).cpu()
        _OBJECTS[key] = lambda: copy.deepcopy(template)
        return {"_target_": "compression.run.api.registered_model", "key": key,
                "name": type(model).__name__}, template
    if callable(model):
        dotted = _dotted(model)
        if dotted is not None:
            return {"_target_": dotted, "name": dotted.rsplit(".", 1)[-1]}, None
        key = _source_key(model)
        _OBJECTS[key] = model
        return {"_target_": "compression.run.api.registered_model", "key": key,
                "name": getattr(model, "__name__", "model").strip("<>")}, None
    raise ConfigError(f"model={type(model).__name__}: pass a built-in name, an nn.Module or a "
                      "factory returning one")


def _model_overrides(model: Any, workdir: Path) -> list[str]:
    if isinstance(model, str):
        return [f"model={model}"]
    section, weights = _model_section(model)
    if weights is not None:
        ckpt = workdir / "model.safetensors"
        save_file({k: t.detach().contiguous() for k, t in weights.state_dict().items()},
                  str(ckpt))
        section["checkpoint"] = str(ckpt)
    return ["~model", *(f"+model.{k}={v}" for k, v in section.items())]


def _data_digest(splits: Any) -> str:
    h = hashlib.sha256()
    for part in splits if isinstance(splits, Sequence) else splits.values():
        if isinstance(part, Sequence):
            for a in part:
                a = a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
                h.update(str(a.shape).encode())
                h.update(np.ascontiguousarray(a).tobytes())
        elif part is not None:  # a Dataset: identified by its class and length
            h.update(f"{type(part).__module__}.{type(part).__qualname__}:{len(part)}".encode())
    return h.hexdigest()[:16]


def _data_overrides(data: Any) -> list[str]:
    """A dataset name (`digits`, `fashion_mnist`, ...) or the splits themselves: (train, val,
    test) / {"train": ...}, each an (x, y) pair or a Dataset; val and test may be None."""
    if isinstance(data, str):
        return [f"data={data}"]
    if isinstance(data, Mapping | Sequence):
        key = _data_digest(data)
        _OBJECTS[key] = data
        return ["data=custom", "data._target_=compression.run.api.registered_data",
                f"+data.key={key}"]
    raise ConfigError(f"data={type(data).__name__}: pass a dataset name or (train, val, test)")


def _flatten(prefix: str, value: Any) -> list[str]:
    if isinstance(value, Mapping):
        return [o for k, v in value.items() for o in _flatten(f"{prefix}.{k}", v)]
    if value is None:
        return [f"{prefix}=null"]
    if isinstance(value, list | tuple):
        return [f"{prefix}=[{','.join(map(str, value))}]"]
    return [f"{prefix}={value}"]


def overrides_for(model: Any = "mlp", data: Any = "digits", *, pruning: str | None = None,
                  sparsity: float | None = None, quantization: str | None = None,
                  metric: str | None = None, overrides: Sequence[str] = (),
                  workdir: Path | None = None, **settings: Any) -> list[str]:
    """The Hydra overrides `compress` runs with: `settings` are config sections as mappings
    (train={"epochs": 5}) or keys with `__` for dots (train__epochs=5)."""
    out = _model_overrides(model, workdir or Path(tempfile.mkdtemp(prefix="compress-")))
    out += _data_overrides(data)
    if pruning is not None:
        out.append(f"pruning={pruning}")
    if sparsity is not None:
        out.append(f"pruning.sparsity={sparsity}")
    if quantization is not None:
        out.append(f"quantization={quantization}")
    if metric is not None:
        out.append(f"metric={metric}")
    out += overrides  # then the keyword sections: the most specific say wins
    for key, value in settings.items():
        out += _flatten(key.replace("__", "."), value)
    return out


def compose(overrides: Sequence[str]) -> Any:
    """The project's Hydra config with `overrides`, as `python train.py` composes it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from compression.config.run import CONFIG_DIR

    was = GlobalHydra.instance().is_initialized()
    if was:  # a notebook may hold its own Hydra: leave it as it was
        return _compose_aside(overrides)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides))


def _compose_aside(overrides: Sequence[str]) -> Any:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from compression.config.run import CONFIG_DIR

    saved = GlobalHydra.instance().hydra
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return hydra_compose("config", overrides=list(overrides))
    finally:
        GlobalHydra.instance().initialize(saved)  # type: ignore[arg-type]


def compress(model: Any = "mlp", data: Any = "digits", *, pruning: str | None = None,
             sparsity: float | None = None, quantization: str | None = None,
             metric: str | None = None, overrides: Sequence[str] = (), **settings: Any
             ) -> Result:
    """Run the pipeline once on `model` and `data` (see the module docstring); returns the
    metrics, the artifact path and the compressed model."""
    from compression.run import pipeline

    with tempfile.TemporaryDirectory(prefix="compress-") as tmp:
        cfg = compose(overrides_for(model, data, pruning=pruning, sparsity=sparsity,
                                    quantization=quantization, metric=metric,
                                    overrides=overrides, workdir=Path(tmp), **settings))
        sink: dict[str, Any] = {}
        pipeline.run(cfg, sink=sink)
    return Result(sink["metrics"], sink["artifact"], sink["model"], sink["run_id"],
                  sink["config"])


def model_config(model: Any) -> Any:
    """The trusted ModelConfig naming `model`'s factory, as `compress` recorded it."""
    from compression.models.build import ModelConfig

    if model is None or isinstance(model, str):
        return None
    return ModelConfig.from_dict(_model_section(model)[0])


def load(path: str | Path, model: Any = None) -> nn.Module:
    """The compressed model in `path`, ready for inference. A built-in model needs nothing
    more; a user model needs `model` (its factory or an instance of it): a file never names the
    code that is run to build it."""
    from compression.artifact import format as export

    cfg = model_config(model)
    header = export.read_meta(Path(path))["model"]
    target = header.get("_target_")
    if target is not None and (cfg is None or cfg.to_dict().get("_target_") != target
                               or cfg.kwargs.get("key") != header.get("key")):
        raise ConfigError(f"{path} holds a user model ({target}); pass model=<its factory or "
                          "an instance> to load it")
    loaded, _ = export.load_artifact(Path(path), model=cfg)
    return loaded
