"""The MLflow tracking store: which URI, whether it is reachable (checked in one line before
any run), a client for it, the SQLite file lock, and retries over transient store errors."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compression.core import paths
from compression.core.errors import ConfigError, first_line
from compression.core.redaction import redact

if TYPE_CHECKING:  # MLflow takes seconds to import: only once a run really starts
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)


def resolve_uri(uri: str | None = None) -> str:
    """Config value, else $MLFLOW_TRACKING_URI, else the project's SQLite database."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or paths.default_tracking_uri()


class StoreUnavailableError(ConfigError):
    """The tracking store does not answer: an outage, not a fault of the run's configuration
    (a sweep queues such a trial again instead of counting it as failed)."""


DATABASES = ("postgresql", "mysql", "mssql")  # MLflow's database stores besides sqlite
SCHEMES = ("http", "https", "sqlite", *DATABASES, "databricks")  # tracking stores we accept
PROBE_TIMEOUT_S = 5


def check_uri(uri: str, key: str = "tracking.uri") -> None:
    """Refuse, in one line, a URI MLflow has no tracking store for (it would fail with a
    traceback deep in the first job), and its deprecated file store (a path or `file:` URI)."""
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if uri in ("databricks", "databricks-uc"):  # MLflow's names for a Databricks workspace
        return
    if scheme in ("", "file"):
        raise ConfigError(f"{key}={redact(uri)}: MLflow's file store is in maintenance mode "
                          "and not supported; use a database, e.g. sqlite:///path/mlflow.db, "
                          "or a server, http://host:5000")
    if scheme.split("+")[0] not in SCHEMES:
        raise ConfigError(f"{key}={redact(uri)}: unknown scheme {scheme!r}; allowed: "
                          f"{', '.join(SCHEMES)} (database schemes may name a driver, e.g. "
                          "postgresql+psycopg2)")


@functools.cache
def check_reachable(uri: str) -> None:
    """Fail in one line, within PROBE_TIMEOUT_S, when the tracking store behind `uri` does not
    answer.

    MLflow itself retries an unreachable database for about 100 s (an SQLite file it cannot
    open too, and a server for minutes) and then raises a traceback; a sweep would pay that
    once per trial. Checked once per URI per process."""
    check_uri(uri)
    scheme = uri.split("://", 1)[0].lower()
    if scheme in ("http", "https"):
        _check_server(uri)
    elif scheme == "sqlite":
        _check_sqlite(uri)
    elif scheme.split("+")[0] in DATABASES:
        import sqlalchemy
        from sqlalchemy.pool import NullPool

        args = {} if scheme.startswith("mssql") else {"connect_timeout": PROBE_TIMEOUT_S}
        try:
            engine = sqlalchemy.create_engine(uri, poolclass=NullPool, connect_args=args)
            with engine.connect():
                pass
            engine.dispose()
        except (ImportError, ValueError, sqlalchemy.exc.SQLAlchemyError) as e:
            raise StoreUnavailableError(f"tracking.uri={redact(uri)}: cannot connect to the "
                                        f"MLflow database: {redact(first_line(e))}") from None


def _check_server(uri: str) -> None:
    """GET <server>/health (which MLflow's basic-auth app serves without credentials)."""
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(uri)
    host = parts.netloc.rsplit("@", 1)[-1]  # user:password@ is MLflow's, not the probe's
    health = urllib.parse.urlunsplit((parts.scheme, host, parts.path.rstrip("/") + "/health",
                                      "", ""))
    try:
        urllib.request.urlopen(health, timeout=PROBE_TIMEOUT_S).close()
    except (OSError, ValueError) as e:  # refused, timed out, HTTP error, malformed URL
        raise StoreUnavailableError(f"tracking.uri={redact(uri)}: no MLflow server answers "
                                    f"at {health} ({redact(e)})") from None


def _check_sqlite(uri: str) -> None:
    """Open the database file as MLflow will (creating it and its folder, as MLflow does)."""
    import sqlite3

    path = uri.split("://", 1)[1].split("?", 1)[0]
    path = path[1:] if path.startswith("/") else path  # sqlite:///rel, sqlite:////abs
    if path in ("", ":memory:"):
        return
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=rwc", uri=True,
                                                timeout=PROBE_TIMEOUT_S)) as db:
            db.execute("pragma schema_version")
    except (OSError, sqlite3.Error) as e:
        raise ConfigError(f"tracking.uri={redact(uri)}: cannot open the SQLite database "
                          f"{path}: {e}") from None


def client_for(uri: str | None) -> MlflowClient:
    """An MlflowClient for `uri` (see resolve_uri) whose store has answered (check_reachable)
    and, for SQLite, exists with its schema (sqlite_store_lock)."""
    from mlflow.tracking import MlflowClient

    resolved = resolve_uri(uri)
    check_reachable(resolved)
    with sqlite_store_lock(resolved) as sqlite:
        client = MlflowClient(tracking_uri=resolved)
        if sqlite:  # the store is built now, under the lock (migrations on a new database)
            _retry(client.search_experiments, max_results=1)
    return client


def _sqlite_path(uri: str) -> Path | None:
    """sqlite:///rel.db or sqlite:////abs.db -> the file; None for in-memory databases."""
    path = uri.split(":///", 1)[1].split("?", 1)[0] if ":///" in uri else ""
    return Path(path) if path and path != ":memory:" else None


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on `path` between processes of this machine (flock). Where
    the file cannot be opened (a read-only or missing folder) it locks nothing: the caller's
    own access then fails with its own error."""
    try:
        import fcntl
        handle = path.open("a")
    except (ImportError, OSError):  # no flock (Windows), or no place for the lock file
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def sqlite_store_lock(uri: str) -> Iterator[bool]:
    """For an SQLite URI: hold a lock on `<db>.lock` while MLflow opens (creates) the store.

    MLflow creates a new database's tables with ~60 Alembic migrations on first access, and
    two processes doing it at once (two sweeps started together, or the workers of one) break
    it for good (`table _alembic_tmp_experiments already exists` on every later run). Under
    the lock the first process migrates and the others find the tables made. Other URIs: no
    lock (a server or a database server serializes its own schema changes)."""
    db = _sqlite_path(uri) if uri.lower().startswith("sqlite:") else None
    if db is None:
        yield False
        return
    with contextlib.suppress(OSError):  # MLflow makes the folder too; the lock needs it first
        db.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(db.with_name(db.name + ".lock")):
        yield True


def _retry(fn: Any, *args: Any, attempts: int = 8, **kwargs: Any) -> Any:
    """SQLite writers lock each other under parallel workers; back off and retry."""
    from mlflow.exceptions import MlflowException

    for i in range(attempts):
        try:
            return fn(*args, **kwargs)
        except MlflowException as e:
            if "locked" not in str(e).lower() or i == attempts - 1:
                raise
            time.sleep(0.1 * 2**i)
    raise AssertionError("unreachable")


# Marks the project's experiments as model training (MLflow's own kind selector shows it, and
# MLflow versions that choose an experiment's first page by it open the runs table).
