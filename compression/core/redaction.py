"""Credentials never leave this process in clear text: the one redaction function every writer
uses (MLflow params and tags, log lines, results files, Hydra's saved configs), a log-record
factory that applies it to every log line, and a Hydra callback that redacts the config files
Hydra itself writes (`multirun.yaml`, `.hydra/*.yaml`). See docs/secrets.md."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

MASK = "***"

# scheme://user:password@host -> scheme://user:***@host. The password runs to the last '@'
# before the host's path (a raw '@' in a password is common enough, though it should be
# percent-encoded); quotes and whitespace end it, so an override list stays parseable.
# Hydra writes overrides with ':' escaped (`postgresql\://user\:pw@host`): a backslash may
# precede each ':'.
_USERINFO = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*\\?://[^\s/:@'\"\]\[,\\]*\\?:)(?P<secret>[^\s/'\"]*)@")
# ?password=... / &pwd=... (libpq, SQLAlchemy and MLflow-server URLs) and a libpq
# "key=value" connection string's password; the value ends at '&', whitespace or a quote.
_QUERY = re.compile(
    r"(?P<head>(?<![A-Za-z0-9_])(?:password|passwd|pwd|pass|secret|token|access_token|api_key)"
    r"=)(?P<secret>[^&\s'\",;#\]]+)", re.IGNORECASE)


def redact(text: Any) -> str:
    """`text` (any value, as str) with every credential in it replaced by ***: the password of
    `scheme://user:password@host` and the value of a `password=` / `pwd=` (and `token=`, ...)
    parameter. Works on whole URLs and on text that holds them (override lists, log lines,
    YAML, error messages). Idempotent."""
    s = str(text)
    if "@" in s:
        s = _USERINFO.sub(lambda m: f"{m['head']}{MASK}@" if m["secret"] != MASK else m[0], s)
    if "=" in s:
        s = _QUERY.sub(lambda m: f"{m['head']}{MASK}", s)
    return s


# -- log lines ----------------------------------------------------------------------------------
_installed = False


def install_log_redaction() -> None:
    """Redact every log record of this process as it is created, whoever logs it (Hydra's
    launcher logs each job's overrides, MLflow logs its store URL) and wherever it goes: a
    record factory survives the handler reconfiguration Hydra does for every job, which a
    handler's filter would not. Idempotent; cheap for records without '@' or '='."""
    global _installed
    if _installed:
        return
    _installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave the record for logging to report
            return record
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return record

    logging.setLogRecordFactory(factory)


# -- files Hydra writes -------------------------------------------------------------------------
def redact_file(path: Path) -> bool:
    """Rewrite `path` with its credentials redacted (atomically); True if anything changed."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return False
    clean = redact(text)
    if clean == text:
        return False
    tmp = path.with_name(f".{path.name}.redact")
    tmp.write_text(clean)
    tmp.replace(path)
    return True


TEXT_SUFFIXES = (".yaml", ".yml", ".log", ".csv", ".json", ".md", ".txt")


def redact_hydra_files(config: DictConfig, whole_sweep: bool = False) -> list[Path]:
    """Redact the YAML files Hydra saved for the current job and sweep: `<output dir>/<output
    subdir>/*.yaml` (config, hydra, overrides) and the sweep dir's `multirun.yaml`; with
    `whole_sweep`, every text file under the sweep dir (job logs, results files)."""
    hydra = config.get("hydra") if isinstance(config, DictConfig) else None
    if hydra is None:
        return []
    folders = []
    output_dir = hydra.get("runtime", {}).get("output_dir")
    subdir = hydra.get("output_subdir")
    if output_dir and subdir:
        folders.append(Path(str(output_dir)) / str(subdir))
    files = [f for d in folders if d.is_dir() for f in sorted(d.glob("*.yaml"))]
    try:
        sweep_dir = hydra.sweep.dir
    except Exception:  # ${now:} and friends resolve only inside Hydra
        sweep_dir = None
    if sweep_dir:
        files.append(Path(str(sweep_dir)) / "multirun.yaml")
        if whole_sweep and Path(str(sweep_dir)).is_dir():
            files += [f for f in Path(str(sweep_dir)).rglob("*") if f.suffix in TEXT_SUFFIXES]
    return [f for f in files if f.is_file() and redact_file(f)]


class RedactHydraFiles(Callback):
    """Hydra writes the job's config, its overrides and `multirun.yaml` as given on the command
    line, passwords included, right before it calls `on_job_start`; this rewrites them redacted
    at once (and again when the job and the multirun end, for sweepers that save late)."""

    def __init__(self) -> None:
        install_log_redaction()

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        install_log_redaction()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        install_log_redaction()

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        install_log_redaction()  # a launcher's worker process unpickles this callback: no init
        redact_hydra_files(config)

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        redact_hydra_files(config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        redact_hydra_files(config, whole_sweep=True)
