"""Model profiles: parameters, forward FLOPs, FLOPs per parameter and file size for built-in or
user models, plus a check that the saved file holds exactly the state_dict's tensor bytes plus
its header (the format's only overhead), and the file beside torch.save(state_dict) (the talk's
sanity check "model file size == state_dict size")."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from torch import nn

from compression import data as data_mod
from compression.artifact.format import itemize, save_artifact, state_bytes, state_dict_bytes
from compression.config.run import CONFIG_DIR, RunConfig
from compression.data import DataConfig, DataSpec
from compression.measure import flops_per_layer
from compression.models.build import MODELS, ModelConfig, build_model
from compression.quantization import QUANTIZERS

# Input shapes of the built-in datasets, so profiling needs no dataset on disk (Fashion-MNIST
# may not be installed). Other datasets are loaded once to read their shape.
KNOWN_SPECS = {
    "digits": DataSpec("digits", 1, 8, 10),
    "fashion_mnist": DataSpec("fashion_mnist", 1, 28, 10),
}


@dataclass
class Profile:
    model: str
    data: str
    params: int
    flops: int  # forward FLOPs for one sample (2 per multiply-accumulate)
    file_bytes: int  # the model saved densely in fp32 in the artifact format
    tensor_bytes: int  # sum of numel * element size over the state_dict
    header_bytes: int  # everything but tensor data: safetensors framing + deflated JSON header
    state_dict_bytes: int = 0  # torch.save(model.state_dict()): the usual checkpoint

    @property
    def overhead_ok(self) -> bool:
        return self.file_bytes == self.tensor_bytes + self.header_bytes

    def row(self) -> dict[str, object]:
        return {
            "model": self.model, "data": self.data,
            "params_M": self.params / 1e6, "GFLOPs": self.flops / 1e9,
            "FLOPs_per_param": self.flops / max(1, self.params),
            "size_MB": self.file_bytes / 1e6, "file_bytes": self.file_bytes,
            "tensor_bytes": self.tensor_bytes, "header_bytes": self.header_bytes,
            "state_dict_bytes": self.state_dict_bytes,
            "file_vs_state_dict": self.file_bytes / max(1, self.state_dict_bytes),
            "overhead_pct": 100 * (self.file_bytes - self.tensor_bytes) / self.file_bytes,
            "file_matches": self.overhead_ok,
        }


def spec_for(cfg: DataConfig) -> DataSpec:
    return KNOWN_SPECS.get(cfg.name) or data_mod.load(cfg).spec


def compose_run_config(overrides: list[str]) -> RunConfig:
    """The project's real conf/ composed with Hydra-style overrides (`model=lenet5 ...`)."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("config", overrides=["tracking=off", *overrides])
    finally:
        GlobalHydra.instance().clear()
    return RunConfig.from_cfg(cfg)


def profile_model(model: nn.Module, model_cfg: ModelConfig, spec: DataSpec) -> Profile:
    flops, _ = flops_per_layer(model.eval(), spec.example_input(1))
    params = sum(p.numel() for p in model.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        save_artifact(model, path, model_cfg=model_cfg, spec=spec,
                      quant_cfg=QUANTIZERS.build_config({"mode": "none"}), sparse=False)
        file_bytes, header = path.stat().st_size, itemize(path)["header_bytes"]
    return Profile(model_cfg.name, spec.name, params, flops, file_bytes, state_bytes(model),
                   header, state_dict_bytes(model))


def profile_overrides(overrides: list[str]) -> pd.DataFrame:
    """One row per model: the one `model=...` names, else every built-in model."""
    names_model = any(o.split("=", 1)[0].lstrip("+~").startswith("model") for o in overrides)
    variants = [overrides] if names_model else [[f"model={m}", *overrides] for m in sorted(MODELS)]
    rows = []
    for ov in variants:
        rc = compose_run_config(ov)
        spec = spec_for(rc.data)
        rows.append(profile_model(build_model(rc.model, spec), rc.model, spec).row())
    return pd.DataFrame(rows)
