"""Which runs to analyze: an experiment, a sweep (parent run id or study name) or a filter."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from compression.core import paths
from compression.core.errors import ConfigError
from compression.tracking import resolve_uri

LATEST = "latest"  # --sweep latest: the most recently started parent run


@dataclass(frozen=True)
class Selection:
    """At least one of `experiment`, `sweep` or `filter`; `filter` (an MLflow filter string such
    as "params.model.name = 'mlp'") narrows the other two when combined with them."""

    experiment: str | None = None
    sweep: str | None = None
    filter: str | None = None
    tracking_uri: str | None = None  # None: config > $MLFLOW_TRACKING_URI > the project's DB

    def __post_init__(self) -> None:
        if not (self.experiment or self.sweep or self.filter):
            raise ConfigError(
                "no runs selected; give --experiment NAME, --sweep PARENT_RUN_ID|STUDY|latest "
                "or --filter \"MLFLOW FILTER\""
            )
        if self.experiment and self.sweep:
            raise ConfigError("give --experiment or --sweep, not both (a sweep names its runs)")

    @property
    def uri(self) -> str:
        return resolve_uri(self.tracking_uri)

    def name(self, sweep: str | None = None) -> str:
        """A file-system-safe name for the output folder, e.g. `sweep-pareto-digits-mlp`;
        `sweep` is what `--sweep` resolved to (`latest` names no sweep for long)."""
        if self.sweep:
            name = sweep or self.sweep
            raw = name if name.startswith("sweep-") else f"sweep-{name}"  # unnamed studies
            raw = re.sub(r"[:,]\s*", "_", raw)  # `demo: a, b` -> `demo_a_b`
        elif self.experiment:
            raw = f"experiment-{self.experiment}"
        else:
            raw = "filter-" + (self.filter or "")[:40]
        if self.filter and (self.sweep or self.experiment):
            raw += "-filtered"
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", raw)

    def default_out(self, sweep: str | None = None) -> Path:
        return paths.output_dir() / "analysis" / self.name(sweep)
