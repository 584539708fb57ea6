"""Start joblib workers by forking the sweep process, so they begin with torch, MLflow, Hydra and
the pipeline already imported.

joblib's default (loky) starts each worker as a fresh interpreter that imports all of that again:
about 5 s per worker, and on a small machine the workers do it at the same time, competing for
the cores (measured in benchmarks/sweep_overhead.py). A forked worker shares the parent's
imported modules and starts in milliseconds.

Forking is safe here because of what the sweep process has done by then: it has run no torch
kernel (so no OpenMP thread pool exists to be lost in the child), and the database connections it
holds (MLflow's store, Optuna's RDB storage) are dropped in each child right after the fork, as
SQLAlchemy prescribes (`Engine.dispose(close=False)`), so a worker opens its own instead of
talking over the sweep's socket or SQLite handle. Each worker, forked or fresh, also watches the
sweep process and ends itself (its running trial's MLflow run KILLED) when the sweep is killed."""

from __future__ import annotations

import functools
import gc
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import warnings

log = logging.getLogger(__name__)


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
_hooked = False
_watching = False  # this process runs the watch-parent thread
# The pools a child inherited, kept alive until it exits (workers end with os._exit, no cleanup):
# freeing one would close its connections, and closing a PostgreSQL connection sends the server
# a Terminate over the socket the parent still uses.
_inherited: list[object] = []


def _forget_inherited_connections() -> None:
    """Let every SQLAlchemy engine this child inherited open new connections, leaving the
    parent's untouched. Engines are found on the heap: MLflow and Optuna keep theirs private."""
    sa = sys.modules.get("sqlalchemy.engine")
    if sa is None:  # nothing imported it: no connection can exist
        return
    with warnings.catch_warnings():  # isinstance on some heap objects (torch.distributed's
        warnings.simplefilter("ignore")  # deprecated reduce_op) warns as a side effect
        engines = [obj for obj in gc.get_objects() if isinstance(obj, sa.Engine)]
    for engine in engines:
        _inherited.append(engine.pool)
        engine.dispose(close=False)


def _exit_with_parent(parent: int) -> None:
    """Watch for the sweep process's death; then end this worker like a Ctrl-C would.

    A worker outlives a sweep killed with SIGKILL (or a plain `kill`), and would finish its trial
    unseen: its MLflow run would end FINISHED for a trial the resumed study runs again. Here its
    running job gets SIGTERM (tracking.run_status ends the run KILLED; an idle worker just
    exits) and the process is gone shortly after, since loky would otherwise keep it waiting
    for work that never comes."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(EXIT_GRACE_S)  # for the job to end its MLflow run
    os._exit(1)


def _watch_parent() -> None:
    global _watching
    _watching = True
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), name="watch-parent",
                     daemon=True).start()


def _in_forked_child() -> None:
    _forget_inherited_connections()
    # SIGTERM in the sweep means "stop the sweep" (train.py); in a worker, its job's
    # tracking.run_status handles it, and an idle worker just ends, as a fresh one would
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # the process that forked this one: the sweep for a worker (a worker's own forks watch it)
    _watch_parent()


def watch_sweep() -> None:
    """Called by every job: in a joblib (loky) worker started as a fresh interpreter
    (`fork_workers=false`), watch the sweep as forked workers do from the fork. loky starts
    those workers from the sweep process itself, so it is their parent too. Once per process;
    elsewhere (the sweep itself, the basic launcher, forked workers) it does nothing. A fresh
    worker that never got a job runs none of our code: it ends at loky's idle timeout (300 s)."""
    if not _watching and multiprocessing.current_process().name.startswith("LokyProcess"):
        _watch_parent()


def fork_workers() -> bool:
    """Make loky fork its workers from this process; False where the OS cannot fork."""
    global _hooked
    if "fork" not in multiprocessing.get_all_start_methods():
        return False
    from joblib.externals.loky.backend.context import set_start_method

    from compression.training import load_optimizer_machinery

    set_start_method("fork", force=True)
    # loky warns on every executor it builds that fork "does not respect POSIX" (a child of a
    # threaded process may only call async-signal-safe functions). The module docstring says
    # why these workers are safe; the warning would only alarm users on every sweep.
    warnings.filterwarnings("ignore", message="`fork` start method should not be used",
                            category=UserWarning)
    if not _hooked:
        os.register_at_fork(after_in_child=_in_forked_child)
        _hooked = True
    # Imported once here rather than in every worker: the optimizer's torch._dynamo import.
    load_optimizer_machinery()
    log.debug("joblib workers will be forked from the sweep process")
    return True
