"""Thin Hydra Sweeper: Hydra discovers plugin classes only under the `hydra_plugins` namespace,
and imports every such module at start-up, so the heavy imports wait until a sweep is built."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """A bad setting or search space: one readable line and exit 2, as train.py does for jobs
    (Hydra would wrap it in a multi-line instantiation error)."""
    from compression.core.errors import ConfigError
    from compression.sweep.sweeper import SweepFailedError
    from compression.tracking.callbacks import MlflowParentRun

    try:
        yield
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        MlflowParentRun.discard_active()  # opened by Hydra's callback before this sweeper
        sys.exit(2)
    except SweepFailedError as e:  # too many failed trials: the sweep stops, the study stays
        print(f"error: {e}", file=sys.stderr)
        try:
            MlflowParentRun.tag_active({"error": str(e)[:5000]})  # ended FAILED at exit
        except Exception as tag_error:  # the store may be why trials failed: keep the one line
            print(f"warning: could not tag the MLflow parent run: {tag_error}", file=sys.stderr)
        sys.exit(1)


class OptunaSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        with _one_line_errors():
            from compression.sweep.sweeper import OptunaSweep

            self.impl = OptunaSweep(settings)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        with _one_line_errors():
            self.impl.setup(hydra_context=hydra_context, task_function=task_function,
                            config=config)
        self.launcher = self.impl.launcher

    def sweep(self, arguments: list[str]) -> Any:
        with _one_line_errors():
            return self.impl.sweep(arguments)
