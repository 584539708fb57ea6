"""The Optuna side of a sweep: storage, study, worker liveness, the counts that end a sweep."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, Trial, TrialState

from compression.core import paths, private_api
from compression.core.errors import ConfigError, first_line
from compression.core.redaction import redact
from compression.sweep.config import SweeperConfig
from compression.sweep.pruners import make_pruner
from compression.sweep.samplers import make_sampler

log = logging.getLogger(__name__)

DEFAULT_STORAGE = "outputs/optuna.journal"
WORKER = f"{socket.gethostname()}:{os.getpid()}"
# User attrs each running trial carries so that another process can tell a dead worker's trial.
WORKER_ATTR, HEARTBEAT_ATTR, ERROR_ATTR = "worker", "heartbeat", "error"
QUEUED_ATTR = "queued"  # trials put in the queue: grid points, retries of a dead worker's trial
CANCELLED_ATTR = "cancelled"  # surplus trials told PRUNED unrun (several workers, last trials)
# A FAIL that was not the configuration's (dead worker, store outage, interrupt): queued again,
# not counted against max_failure_rate (see sweep/failures.py); ATTEMPT_ATTR numbers the tries.
INFRA_ATTR, ATTEMPT_ATTR = "infra_error", "attempt"


def resolve_storage(url: str | None) -> str:
    """Journal file path or SQLAlchemy URL, with relative paths anchored at the project root."""
    url = url or DEFAULT_STORAGE
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        return f"sqlite:///{paths.resolve(url.removeprefix('sqlite:///'))}"
    if "://" in url:
        return url
    return str(paths.resolve(url.removeprefix("journal:")))


def make_storage(url: str | None) -> BaseStorage:
    """`*.journal` / `journal:<path>` / plain paths: Optuna's journal file (safe for parallel
    local workers); anything with `://`: an SQLAlchemy URL (sqlite, postgresql, mysql)."""
    resolved = resolve_storage(url)
    if "://" in resolved:
        for attempt in range(3):
            try:
                return RDBStorage(resolved)
            except Exception as e:  # bad driver, unreachable server: one line, before training
                # Several processes starting on a new database race to create its tables
                # (a unique violation on the catalog): the loser finds them made when it retries.
                race = "already exists" in str(e) or "duplicate key" in str(e)
                if race and attempt < 2:
                    time.sleep(0.5 + attempt)
                    continue
                raise ConfigError(f"hydra.sweeper.storage={redact(resolved)}: "
                                  f"{first_line(e)}") from None
    try:
        Path(resolved).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(resolved))
    except OSError as e:  # a folder that cannot be written (or created): one line, not a trace
        raise ConfigError(f"hydra.sweeper.storage={redact(url)}: cannot open the journal file "
                          f"{resolved}: {e.strerror or e}") from None


def open_study(cfg: SweeperConfig) -> optuna.Study:
    """Create the study, or load it when `study_name` already exists in the storage (resume).

    The sampler's seed is offset by the number of workers that joined the study before this
    one: a fresh sweep samples exactly as `seed` says, while a resumed run or a second worker
    does not replay the first one's random draws (which would repeat its trials)."""
    name = cfg.study_name or f"sweep-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    storage = make_storage(cfg.storage)
    study = optuna.create_study(study_name=name, storage=storage,
                                directions=list(cfg.directions), load_if_exists=True)
    have = [d.name.lower() for d in study.directions]
    if have != list(cfg.directions):
        raise ConfigError(f"study {name!r} exists with directions {have}, not "
                          f"{list(cfg.directions)}; pick another hydra.sweeper.study_name")
    seed = None if cfg.seed is None else cfg.seed + _join(study)
    return optuna.load_study(study_name=name, storage=storage,
                             sampler=make_sampler(cfg.sampler, seed, cfg.sampler_kwargs),
                             pruner=make_pruner(cfg.pruner, cfg.pruner_kwargs))


FIXED_ATTR = "fixed_overrides"
# Overrides that do not change what a trial computes: a resumed study may differ in them.
NEUTRAL_PREFIXES = ("tracking.", "paths.", "hydra.", "measure.threads")


def note_fixed_overrides(study: optuna.Study, fixed: list[str]) -> None:
    """Record the overrides every trial of the study gets; on a resume with other ones, warn:
    the study would then mix trials of two settings (the search space itself is checked by
    SearchSpace.check_compatible)."""
    relevant = sorted(o for o in fixed if not o.lstrip("+~").startswith(NEUTRAL_PREFIXES))
    before = study.user_attrs.get(FIXED_ATTR)
    if before is None:
        study.set_user_attr(FIXED_ATTR, relevant)
    elif before != relevant:
        gone = sorted(set(before) - set(relevant))
        new = sorted(set(relevant) - set(before))
        log.warning("study %s was started with other fixed overrides (then: %s; now: %s): its "
                    "trials will mix both settings; use another hydra.sweeper.study_name to "
                    "keep them apart", study.study_name, " ".join(gone) or "-",
                    " ".join(new) or "-")


def _join(study: optuna.Study) -> int:
    """Register this worker; returns how many joined before it (all workers agree on the order:
    registration time, then name)."""
    study.set_user_attr(f"{WORKER_ATTR}:{WORKER}", time.time())
    joined = sorted((t, k) for k, t in study.user_attrs.items()
                    if k.startswith(f"{WORKER_ATTR}:"))
    return [k for _, k in joined].index(f"{WORKER_ATTR}:{WORKER}")


@dataclass(frozen=True)
class Counts:
    complete: int
    running: int
    waiting: int
    failed: int  # jobs that failed (with an error attr), not trials of dead workers
    pruned: int = 0  # stopped early by the pruner (not surplus trials cancelled unrun)

    @property
    def done(self) -> int:
        """Trials that count toward n_trials: completed, or judged hopeless by the pruner."""
        return self.complete + self.pruned


def counts(study: optuna.Study) -> Counts:
    trials = study.get_trials(deepcopy=False)
    n = {s: sum(t.state == s for t in trials) for s in TrialState}
    failed = sum(t.state == TrialState.FAIL and ERROR_ATTR in t.user_attrs for t in trials)
    return Counts(n[TrialState.COMPLETE], n[TrialState.RUNNING], n[TrialState.WAITING], failed,
                  sum(_pruned(t) for t in trials))


def _pruned(t: FrozenTrial) -> bool:
    return t.state == TrialState.PRUNED and CANCELLED_ATTR not in t.user_attrs


def _is_stale(t: FrozenTrial, grace_period: float, now: float) -> bool:
    worker = t.user_attrs.get(WORKER_ATTR, "")
    host, _, pid = worker.rpartition(":")
    if host == socket.gethostname() and pid.isdigit() and worker != WORKER:
        return not _pid_alive(int(pid))  # same machine: no need to wait for the grace period
    beat = t.user_attrs.get(HEARTBEAT_ATTR)
    started = t.datetime_start.timestamp() if t.datetime_start else now
    return now - (beat if beat is not None else started) > grace_period


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# Completes a dead worker's trial from its MLflow run when that run FINISHED; True if it did.
Recover = Callable[[optuna.Study, FrozenTrial], bool]


def fail_stale_trials(study: optuna.Study, grace_period: float, max_attempts: int,
                      recover: Recover | None = None) -> list[FrozenTrial]:
    """End running trials of dead workers. A trial whose job got as far as a FINISHED MLflow
    run is completed from it by `recover`, so a resume neither runs it again nor leaves two
    FINISHED runs of it; the others are failed and queued again (so a killed sweep, run again,
    skips nothing). Returns the trials ended here (each by exactly one process)."""
    now, ended = time.time(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _is_stale(t, grace_period, now):
            continue
        try:
            if recover is not None and recover(study, t):
                log.warning("trial %d of %s was left running by %s (dead) after its MLflow run "
                            "finished: completed from that run", t.number, study.study_name,
                            t.user_attrs.get(WORKER_ATTR, "?"))
                ended.append(study.get_trials(deepcopy=False)[t.number])  # trials by number
                continue
            ended.append(fail_infra(study, t, f"worker {t.user_attrs.get(WORKER_ATTR, '?')} "
                                    "died", max_attempts))
        except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # another process ended it first (and queued it again)
    return ended


RETRY_BACKOFF_S = 1.0  # seconds per attempt made, before an infrastructure retry


def fail_infra(study: optuna.Study, trial: Trial | FrozenTrial, reason: str,
               max_attempts: int) -> FrozenTrial:
    """FAIL a trial for a reason that is not its configuration's (a dead worker, the tracking
    store down, an interrupt) and queue its parameters again, uncounted. After `max_attempts`
    tries of the same parameters it is counted as a failure (ERROR_ATTR) and not queued."""
    attempt = int(trial.user_attrs.get(ATTEMPT_ATTR, 1))
    final = attempt >= max_attempts
    key = ERROR_ATTR if final else INFRA_ATTR
    text = f"{reason} (attempt {attempt} of {max_attempts})"[:2000]
    if isinstance(trial, Trial):
        trial.set_user_attr(key, text)
    else:  # a trial of another (dead) process: through the storage, before it is finished
        private_api.set_user_attr_of(study, trial, key, text)
    ft = study.tell(trial.number, state=TrialState.FAIL)
    if final:
        log.warning("trial %d of %s failed: %s; not queued again", trial.number,
                    study.study_name, text)
    else:
        # Back off before the retry is launched: a store being restarted refuses connections
        # for seconds, and immediate retries spent every attempt within one second.
        time.sleep(min(RETRY_BACKOFF_S * attempt, 10.0))
        study.enqueue_trial(trial.params, user_attrs={QUEUED_ATTR: f"retry of {trial.number}",
                                                      ATTEMPT_ATTR: attempt + 1})
        log.warning("trial %d of %s failed: %s; queued again", trial.number, study.study_name,
                    text)
    return ft


def cancel_if_surplus(study: optuna.Study, trial: Trial, n_trials: int) -> bool:
    """With several workers, two may ask for the last trial at once. Running trials are ranked
    by number and only the first `n_trials - complete` may run (every worker ranks alike); a
    surplus one is told PRUNED, its queued parameters go back in the queue."""
    trials = study.get_trials(deepcopy=False)
    done = sum(t.state == TrialState.COMPLETE or _pruned(t) for t in trials)
    running = sorted(t.number for t in trials if t.state == TrialState.RUNNING)
    if trial.number in running[: max(0, n_trials - done)]:
        return False
    trial.set_user_attr(CANCELLED_ATTR, "n_trials reached by other workers")
    study.tell(trial, state=TrialState.PRUNED)
    queued = trial.user_attrs.get(QUEUED_ATTR)
    if queued:
        attrs = {k: trial.user_attrs[k] for k in (QUEUED_ATTR, ATTEMPT_ATTR)
                 if k in trial.user_attrs}
        study.enqueue_trial(trial.params, user_attrs=attrs)
    return True


def claim(trial: Trial) -> None:
    trial.set_user_attr(WORKER_ATTR, WORKER)
    trial.set_user_attr(HEARTBEAT_ATTR, time.time())


@contextmanager
def heartbeat(trials: Iterable[Trial], interval: float) -> Iterator[None]:
    """Mark `trials` alive every `interval` seconds while the launcher runs them."""
    trials, stop = list(trials), threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            for t in trials:
                try:
                    t.set_user_attr(HEARTBEAT_ATTR, time.time())
                except Exception as e:  # a storage hiccup must not kill the sweep
                    log.debug("heartbeat of trial %d failed: %s", t.number, e)

    thread = threading.Thread(target=beat, name="sweep-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
