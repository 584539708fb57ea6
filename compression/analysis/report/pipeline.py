"""Which steps each analysis command runs, in order (`report` is every step), and running one."""

from __future__ import annotations

from collections.abc import Callable

from compression.analysis.report.analysis import Analysis, Options
from compression.analysis.report.publish import html_report, log_to_parent, markdown_report
from compression.analysis.report.steps import (
    autotune,
    curves,
    layers,
    pareto,
    runs_csv,
    runtime,
    sensitivity,
    sweet,
)
from compression.analysis.runs import RunTable
from compression.core import validation as v
from compression.core.errors import ConfigError

Step = Callable[[Analysis], None]
COMMANDS: dict[str, list[Step]] = {
    "curves": [curves, log_to_parent],
    "pareto": [sweet, pareto, runtime, log_to_parent],
    "sweet-spot": [sweet, log_to_parent],
    "layers": [sweet, sensitivity, layers, log_to_parent],
    "report": [runs_csv, autotune, sweet, curves, pareto, runtime, sensitivity, layers,
               markdown_report, html_report, log_to_parent],
}


def run_command(name: str, runs: RunTable, opts: Options) -> Analysis:
    v.one_of("command", name, COMMANDS)
    try:  # before any step: a folder that cannot be made is one line, not a traceback later
        opts.out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out={opts.out}: cannot create the folder ({e.strerror})") from None
    a = Analysis(runs, opts)
    print(runs.summary())
    if a.frame.empty:
        print("nothing to analyze")
        return a
    for step in COMMANDS[name]:
        step(a)
    return a
