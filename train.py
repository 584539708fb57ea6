"""Train, compress, measure and log one model: `python train.py [overrides]` (see --help).

Multirun sweeps: `python train.py -m pruning=unstructured pruning.sparsity=0.5,0.9`.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

import compression.config  # noqa: F401  (registers the ${project_root:} resolver before Hydra)
from compression import pipeline
from compression.errors import ConfigError, DatasetNotFoundError


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | tuple[float, ...]:
    try:
        return pipeline.run(cfg)
    except (ConfigError, DatasetNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)  # one readable line, no traceback
        sys.exit(2)


if __name__ == "__main__":
    main()
