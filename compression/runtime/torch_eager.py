"""`runtime=torch`: PyTorch eager, today's behaviour. The pipeline's own metrics (accuracy,
latency_ms, ...) are this runtime's figures; nothing more is built or logged."""

from __future__ import annotations

from compression.core.lazy import nn
from compression.data import DataSpec
from compression.pruning import PruningConfig
from compression.quantization import QuantizationConfig
from compression.runtime.base import RUNTIMES, Deployed, DeployJob, RuntimeConfig


class TorchEager:
    def check(self, model: nn.Module, cfg: RuntimeConfig, quant: QuantizationConfig,
              pruning: PruningConfig, spec: DataSpec) -> None:
        return None

    def deploy(self, job: DeployJob) -> Deployed | None:
        return None


RUNTIMES.register("torch", RuntimeConfig)(TorchEager())
