"""Peak resident memory of this process, per run (Linux lets the high-water mark be reset)."""

from __future__ import annotations

import functools

_CLEAR_REFS, _STATUS = "/proc/self/clear_refs", "/proc/self/status"


@functools.cache
def peak_rss_resettable() -> bool:
    """Whether this process can reset its peak-RSS high-water mark (Linux: writing "5" to
    /proc/self/clear_refs resets VmHWM to the current RSS), so a peak can be measured per run
    rather than over the process's lifetime (which grows across a multirun's jobs)."""
    return reset_peak_rss()


def reset_peak_rss() -> bool:
    """Start a new peak-RSS window; False where the OS offers no reset."""
    try:
        with open(_CLEAR_REFS, "w") as f:
            f.write("5")
        return _vm_hwm_kib() is not None
    except OSError:
        return False


def _vm_hwm_kib() -> int | None:
    try:
        with open(_STATUS) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss_mb() -> float | None:
    """Peak resident memory (MiB) since the last `reset_peak_rss()`; None where no reset is
    possible (the lifetime peak, ru_maxrss, would mix earlier jobs' peaks into this run's).
    Memory the process already held when the window began (a cached baseline, the allocator's
    retained buffers, see retain_freed_memory) counts too: it is resident during the run."""
    if not peak_rss_resettable():
        return None
    kib = _vm_hwm_kib()
    return None if kib is None else kib / 1024
