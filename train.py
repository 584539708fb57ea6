"""Train, compress, measure and log one model: `python train.py [overrides]` (see --help).

Multirun sweeps: `python train.py -m pruning=unstructured pruning.sparsity=0.5,0.9`.
"""

from __future__ import annotations

import atexit
import gc
import signal
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from compression.core import interrupt, paths
from compression.core.errors import ConfigError, DatasetNotFoundError
from compression.core.redaction import install_log_redaction, redact
from compression.sweep.workers import watch_sweep

# Only light modules above: torch and MLflow (seconds to import) wait until a job really runs,
# so that --help and a bad value answer at once.
if not OmegaConf.has_resolver("project_root"):  # conf/ anchors Hydra's folders at the project
    OmegaConf.register_new_resolver("project_root", lambda: str(paths.project_root()))


def _trial_of_optuna_sweep() -> bool:
    """Our Optuna sweeper tells a job's error to the study as that trial's FAIL and goes on."""
    hc = HydraConfig.get()
    return hc.mode == RunMode.MULTIRUN and "compression_sweeper" in str(
        hc.sweeper.get("_target_", ""))


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | tuple[float, ...]:
    watch_sweep()  # a joblib worker ends with the sweep that started it
    try:
        from compression.config.run import RunConfig

        RunConfig.from_cfg(cfg)  # a bad value answers now, before torch is imported
        from compression.run import pipeline

        return pipeline.run(cfg)
    except (ConfigError, DatasetNotFoundError) as e:
        if _trial_of_optuna_sweep():
            raise
        print(f"error: {redact(e)}", file=sys.stderr)  # one readable line, no traceback
        sys.exit(2)


if __name__ == "__main__":
    # Skip the interpreter's last full garbage collection of the large heap torch, MLflow and
    # Hydra leave behind: 1-2 s of every sweep's wall time, and nothing in it needs finalizing
    # (runs and trials are committed as they happen; logging's own exit hook, which runs after
    # this one, flushes the log files).
    atexit.register(gc.freeze)
    install_log_redaction()  # before Hydra logs a job's overrides (passwords in URLs)
    # SIGTERM (`kill`, a scheduler's pre-emption) stops a run or sweep as Ctrl-C does.
    signal.signal(signal.SIGTERM, interrupt.raise_interrupt)
    try:
        main()
    except KeyboardInterrupt as e:
        interrupt.stop(e)  # one line, runs ended KILLED, exit 130
