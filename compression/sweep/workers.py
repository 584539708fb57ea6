"""Start joblib workers from a fork server that has torch, MLflow, Hydra and the pipeline already
imported, and make every worker end with the sweep that started it.

joblib's default (loky) starts each worker as a fresh interpreter that imports all of that again:
about 5 s per worker, and on a small machine the workers do it at the same time, competing for
the cores (measured in benchmarks/sweep_overhead.py). Forking the sweep process itself would be
quicker still, but is unsafe: by the time loky starts (or restarts) a worker the sweep runs
threads (the trial heartbeat, loky's own manager thread) that may hold a lock (logging, a
database pool) at the moment of the fork, and it holds database connections (MLflow's store,
Optuna's storage) a child must not share. So workers come from a fork server instead
(multiprocessing's `forkserver`): one fresh interpreter, started once per sweep, that imports
the modules below and then only forks. It runs no thread and opens no connection, so each worker
starts in milliseconds with the imports done, and opens its own connections.

A worker, forked or fresh, watches the sweep process and ends itself (its running trial's MLflow
run KILLED) when the sweep is killed."""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import signal
import threading
import time
from typing import TYPE_CHECKING

from compression.core.job import JobContext, set_sweep_pid

if TYPE_CHECKING:
    from omegaconf import DictConfig

log = logging.getLogger(__name__)


def uses_joblib(config: DictConfig) -> bool:
    """True when the sweep's jobs run in joblib (loky) worker processes."""
    return "joblib" in str(config.hydra.launcher.get("_target_", ""))


def concurrent_jobs(config: DictConfig, n_jobs: int) -> int:
    """How many jobs run at once on this machine, to share its cores among them."""
    if not uses_joblib(config):
        return 1  # basic launcher: one after another; cluster launchers: one job per node
    limit = config.hydra.launcher.get("n_jobs", -1)
    limit = os.cpu_count() or 1 if not isinstance(limit, int) or limit < 1 else limit
    return max(1, min(n_jobs, limit))


@functools.cache
def lost_worker_errors() -> tuple[type[BaseException], ...]:
    """What a launcher raises for a batch one of whose jobs' processes died (SIGKILL, out of
    memory, a cluster node lost): joblib's broken pool, submitit's uncompleted job."""
    errors: list[type[BaseException]] = []
    try:
        from joblib.externals.loky.process_executor import BrokenProcessPool

        errors.append(BrokenProcessPool)
    except ImportError:  # no joblib: no workers to lose
        pass
    try:
        from submitit.core.utils import UncompletedJobError

        errors.append(UncompletedJobError)
    except ImportError:
        pass
    return tuple(errors)

PARENT_POLL_S = 0.5
EXIT_GRACE_S = 10.0
# The fork server's workers are not the sweep's children: they learn its pid from here.
# Imported once by the fork server. torch._dynamo: the first optimizer's import (about 1 s,
# see training.load_optimizer_machinery), else paid by every worker's first trial.
PRELOAD = ["compression.run.pipeline", "compression.tracking.callbacks", "hydra.core.utils",
           "torch._dynamo"]
_watching = False  # this process runs the watch-sweep thread


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, killed but not yet reaped by its parent, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:  # no /proc: kill(0) is all there is
        return True


def _exit_with_sweep(sweep: int) -> None:
    """Watch for the sweep process's death; then end this worker like a Ctrl-C would.

    A worker outlives a sweep killed with SIGKILL (or a plain `kill`), and would finish its trial
    unseen: its MLflow run would end FINISHED for a trial the resumed study runs again. Here its
    running job gets SIGTERM (tracking.run_status ends the run KILLED; an idle worker just
    exits) and the process is gone shortly after, since loky would otherwise keep it waiting
    for work that never comes."""
    while _alive(sweep):
        time.sleep(PARENT_POLL_S)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(EXIT_GRACE_S)  # for the job to end its MLflow run
    os._exit(1)


def _is_worker() -> bool:
    name = multiprocessing.current_process().name
    return name.startswith(("LokyProcess", "ForkServerProcess"))


def watch_sweep() -> None:
    """Called by every job: in a joblib worker, start (once per process, so after any fork) the
    thread that ends it with the sweep. A fork-server worker watches the pid the sweep left in
    $COMPRESSION_SWEEP_PID; a fresh loky worker (`fork_workers=false`) its parent, which is the
    sweep. Elsewhere (the sweep itself, the basic launcher) it does nothing. A worker that never
    got a job runs none of our code: it ends at loky's idle timeout (300 s)."""
    global _watching
    if _watching or not _is_worker():
        return
    _watching = True
    sweep = JobContext.current().sweep_pid or os.getppid()
    threading.Thread(target=_exit_with_sweep, args=(sweep,), name="watch-sweep",
                     daemon=True).start()


def fork_workers() -> bool:
    """Make loky start its workers from a fork server with PRELOAD imported, started now (its
    imports then overlap the sweep's own start-up); False where the OS has no fork server."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return False
    from joblib.externals.loky.backend.context import set_start_method

    set_sweep_pid(os.getpid())  # before the server starts: it copies it
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    set_start_method("forkserver", force=True)
    from multiprocessing import forkserver

    forkserver.ensure_running()  # spawned (fork + exec): safe whatever threads run here
    log.debug("joblib workers will be forked from a fork server")
    return True
