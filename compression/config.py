"""The typed, validated view of a composed Hydra config.

`RunConfig.from_cfg` checks every value before any work starts and raises a one-line
`ConfigError` naming the key and the allowed values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from compression import paths
from compression import validation as v
from compression.data import DataConfig
from compression.errors import ConfigError
from compression.export import ExportConfig
from compression.metrics import MeasureConfig
from compression.models import ModelConfig
from compression.pruning import PRUNERS, PruningConfig
from compression.quantization import QUANTIZERS, QuantizationConfig
from compression.registry import build_dataclass
from compression.tracking import TrackingConfig
from compression.training import FinetuneConfig, TrainConfig

CONFIG_DIR = paths.PROJECT_ROOT / "conf"

# Every metric a run logs; `objectives` may name any of them.
METRICS = (
    "accuracy", "val_accuracy", "baseline_accuracy", "baseline_val_accuracy", "accuracy_drop",
    "val_accuracy_drop",
    "sparsity", "params", "nonzero_params", "flops", "effective_flops", "theoretical_speedup",
    "size_bytes", "dense_size_bytes", "compression_ratio", "latency_ms", "latency_p90_ms",
    "batch_latency_ms", "batch_latency_p90_ms", "throughput", "speedup", "batch_speedup",
    "baseline_latency_ms", "baseline_batch_latency_ms", "model_bytes", "peak_rss_mb",
    "baseline_train_seconds", "finetune_seconds", "quantize_seconds", "measure_seconds",
    "total_seconds", "baseline_cache_hit", "threads", "train_threads", "quant_sqnr_db_min",
    "channels_removed_fraction", "param_reduction", "structured_physical", "lowrank_layers",
    "sparse_kernel_layers", "dead_output_rows", "payload_bytes", "header_bytes",
    "state_dict_bytes",
)

TOP_LEVEL = {"data", "model", "train", "finetune", "pruning", "quantization", "measure",
             "tracking", "seed", "objectives", "paths", "hydra", "export"}

if not OmegaConf.has_resolver("project_root"):
    # Lets conf/ anchor Hydra's output folders at the repository, whatever the cwd.
    OmegaConf.register_new_resolver("project_root", lambda: str(paths.project_root()))


@dataclass
class PathsConfig:
    cache: str = "outputs/cache"  # baseline cache; relative paths are from the project root
    artifacts: str = "outputs/artifacts"  # per-run files (also uploaded to MLflow)

    @property
    def cache_dir(self) -> Path:
        return paths.resolve(self.cache)

    @property
    def artifacts_dir(self) -> Path:
        return paths.resolve(self.artifacts)


@dataclass
class RunConfig:
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    finetune: FinetuneConfig
    pruning: PruningConfig
    quantization: QuantizationConfig
    measure: MeasureConfig
    tracking: TrackingConfig
    paths: PathsConfig
    seed: int = 0
    objectives: tuple[str, ...] = ("val_accuracy",)
    export: ExportConfig = field(default_factory=ExportConfig)

    def __post_init__(self) -> None:
        v.number("seed", self.seed, integer=True)
        if not self.objectives:
            raise ConfigError("objectives is empty; name at least one metric, e.g. [val_accuracy]")
        for name in self.objectives:
            v.one_of("objectives", name, METRICS)
        if self.pruning.sparse_kernel and self.quantization.mode != "none":
            raise ConfigError(f"pruning.sparse_kernel=true runs fp32 sparse kernels and cannot "
                              f"be combined with quantization.mode={self.quantization.mode}; "
                              "use one or the other")

    @property
    def latency_threads(self) -> int:
        """Torch threads while timing: `measure.threads` (default 1, stable on shared machines
        and typical of edge deployment), else the same as training."""
        return self.measure.threads if self.measure.threads is not None else self.threads

    @property
    def threads(self) -> int:
        """Torch threads for training: the cores shared among parallel workers."""
        workers = int(os.environ.get("COMPRESSION_WORKERS", "1"))
        return max(1, (os.cpu_count() or 1) // max(1, workers))

    @classmethod
    def from_cfg(cls, cfg: DictConfig | dict[str, Any]) -> RunConfig:
        raw = cfg if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=True)
        assert isinstance(raw, dict)
        unknown = sorted(set(raw) - TOP_LEVEL)
        if unknown:
            allowed = ", ".join(sorted(TOP_LEVEL))
            raise ConfigError(f"{unknown[0]} is not a valid top-level key; allowed: {allowed}")

        def section(name: str) -> dict[str, Any]:
            value = raw.get(name) or {}
            if not isinstance(value, dict):
                raise ConfigError(f"{name}={value!r} must be a mapping of settings")
            return value

        objectives = raw.get("objectives", ["val_accuracy"])
        if isinstance(objectives, str):
            objectives = [objectives]
        return cls(
            data=build_dataclass(DataConfig, section("data"), "data"),
            model=ModelConfig.from_dict(section("model")),
            train=build_dataclass(TrainConfig, section("train"), "train"),
            finetune=build_dataclass(FinetuneConfig, section("finetune"), "finetune"),
            pruning=PRUNERS.build_config({"method": "none", **section("pruning")}),
            quantization=QUANTIZERS.build_config({"mode": "none", **section("quantization")}),
            measure=build_dataclass(MeasureConfig, section("measure"), "measure"),
            tracking=build_dataclass(TrackingConfig, section("tracking"), "tracking"),
            paths=build_dataclass(PathsConfig, section("paths"), "paths"),
            seed=raw.get("seed", 0),
            objectives=tuple(objectives),
            export=build_dataclass(ExportConfig, section("export"), "export"),
        )

    def params(self) -> dict[str, Any]:
        """The resolved config as a nested dict (logged flattened as MLflow params)."""
        from dataclasses import asdict

        return {
            "data": asdict(self.data), "model": self.model.to_dict(), "train": asdict(self.train),
            "finetune": asdict(self.finetune), "pruning": asdict(self.pruning),
            "quantization": asdict(self.quantization), "measure": asdict(self.measure),
            "seed": self.seed, "objectives": list(self.objectives),
            "export": asdict(self.export),
        }
