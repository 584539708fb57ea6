"""Which failures of a trial are the configuration's, and which are the infrastructure's.

A trial that failed because the tracking store did not answer, or because its worker process
died, says nothing about its configuration: counting it against `max_failure_rate` would stop a
sweep (and every resume of it) for an outage long over. Such trials are failed, queued again and
not counted; a configuration that fails the same way on every attempt is counted after
`hydra.sweeper.max_attempts`.

Job errors come back from joblib workers pickled, without their cause chain, so the check falls
back on the messages that MLflow's REST client and the database drivers use."""

from __future__ import annotations

import re
from collections.abc import Iterator

# MLflow's REST client ("API request to ... failed with exception ...: Max retries exceeded"),
# gateway errors of a restarting server, and the drivers' lost-connection messages.
_MESSAGES = re.compile(
    r"API request to .* failed with (timeout )?exception|error code 50[234]\b|"
    r"Max retries exceeded|Connection refused|connection to server .* failed|"
    r"server closed the connection|could not connect to server|terminating connection|"
    r"no MLflow server answers|cannot connect to the MLflow database",
    re.IGNORECASE,
)


def _chain(e: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__  # type: ignore[assignment]


def _types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [ConnectionError, TimeoutError]
    try:
        import requests

        types += [requests.exceptions.ConnectionError, requests.exceptions.Timeout]
    except ImportError:
        pass
    try:
        from sqlalchemy.exc import InterfaceError, OperationalError

        types += [OperationalError, InterfaceError]
    except ImportError:
        pass
    from compression.tracking import StoreUnavailableError

    return (*types, StoreUnavailableError)


def is_infrastructure(e: BaseException) -> bool:
    """True when `e` (or what caused it) is the tracking store or the network failing."""
    if not isinstance(e, BaseException):
        return False
    types = _types()
    return any(isinstance(x, types) or _MESSAGES.search(str(x)) for x in _chain(e))
