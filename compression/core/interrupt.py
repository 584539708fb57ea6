"""Ctrl-C and SIGTERM end a run or a sweep the same way: the runs in progress end KILLED
(tracking.run_status; the Optuna sweeper fails and re-queues its trials in flight), the
sweep's parent run ends KILLED, and the process exits 130 with one line, no traceback. An
Optuna study so stopped resumes with the same command."""

from __future__ import annotations

import signal
import sys
from typing import NoReturn

EXIT_STATUS = 130  # the shell's status for a process ended by Ctrl-C


def raise_interrupt(signum: int, frame: object) -> None:
    """A SIGTERM handler: unwind like Ctrl-C (KeyboardInterrupt) so every `finally` runs."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def stop(e: KeyboardInterrupt) -> NoReturn:
    from mlflow.entities import RunStatus

    from compression.tracking.callbacks import MlflowParentRun

    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second signal must not cut the clean-up
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    how = str(e) or "SIGINT"
    try:
        MlflowParentRun.end_active(RunStatus.to_string(RunStatus.KILLED))
    except Exception as err:  # the store may be gone; the line below still says what happened
        print(f"warning: could not end the sweep's MLflow parent run: {err}", file=sys.stderr)
    print(f"error: interrupted ({how}): runs in progress ended KILLED; an Optuna sweep resumes "
          "when started again with the same hydra.sweeper.study_name", file=sys.stderr)
    sys.exit(EXIT_STATUS)
