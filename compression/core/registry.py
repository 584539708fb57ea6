"""A name -> (config dataclass, handler, metrics) registry: the one registration mechanism of
every pluggable kind (pruning methods, criteria, schedules, quantization modes, runtimes,
models, data formats, quality metrics, codecs, sweep samplers and pruners, ...).

Adding a method is: one module in compression/pruning/ (or quantization/, runtime/, data/)
holding its config dataclass and its handler, registered here with the metrics it logs
(`discover` imports every module of the package, so nothing else imports it;
`config.RUN_METRICS` and therefore `objectives` take its metrics), and its YAML in the matching
config group, generated from the dataclass (`python -m compression.config.confgen`). Dispatch
never uses if/elif chains on names.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Generic, TypeVar

from compression.core.errors import ConfigError

H = TypeVar("H")


@dataclass(frozen=True)
class Entry(Generic[H]):
    name: str
    config_cls: type | None  # None for entries that take no config section (e.g. criteria)
    handler: H
    metrics: tuple[str, ...] = ()  # run metrics this handler may log besides the pipeline's


class Registry(Generic[H]):
    """Maps a name (the value of `key`, e.g. `pruning.method`) to its entry: config class,
    handler and the metrics it logs. The one registration mechanism of the project: methods,
    modes, runtimes, criteria, checks, models, quality metrics, samplers and pruners all use it.
    Read access is that of a read-only mapping of names to handlers (`name in R`, `R[name]`,
    `sorted(R)`), so a lookup never needs to know how the entry was registered."""

    def __init__(self, key: str) -> None:
        self.key = key  # fully qualified config key, used in error messages
        self._entries: dict[str, Entry[H]] = {}

    def register(self, name: str, config_cls: type | None = None, metrics: Sequence[str] = ()
                 ) -> Callable[[H], H]:
        def deco(handler: H) -> H:
            self.add(name, handler, config_cls, metrics)
            return handler

        return deco

    def add(self, name: str, handler: H, config_cls: type | None = None,
            metrics: Sequence[str] = ()) -> None:
        """Register `handler` under `name` (the non-decorator form of `register`)."""
        if name in self._entries:
            raise ValueError(f"{self.key}: {name!r} is registered twice")
        self._entries[name] = Entry(name, config_cls, handler, tuple(metrics))

    def unregister(self, name: str) -> None:
        """Forget `name` (a plug-in or test that registered a method temporarily)."""
        self._entries.pop(name, None)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry[H]]:
        return [self._entries[n] for n in self.names()]

    def metrics(self) -> list[str]:
        """Every metric a registered handler declares, in name order, without repeats."""
        return list(dict.fromkeys(m for e in self.entries() for m in e.metrics))

    def declaring(self, metric: str) -> list[str]:
        """The names whose entries declare `metric` (the runs that log it)."""
        return [e.name for e in self.entries() if metric in e.metrics]

    def get(self, name: str) -> Entry[H]:
        if name not in self._entries:
            raise ConfigError(
                f"{self.key}={name!r} is not a known value; allowed: {', '.join(self.names())}"
            )
        return self._entries[name]

    def find(self, name: str) -> H | None:
        """The handler of `name`, or None where nothing is registered under it."""
        entry = self._entries.get(name)
        return entry.handler if entry is not None else None

    def __getitem__(self, name: str) -> H:
        return self.get(name).handler

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def values(self) -> list[H]:
        return [e.handler for e in self.entries()]

    def items(self) -> list[tuple[str, H]]:
        return [(e.name, e.handler) for e in self.entries()]

    def build_config(self, values: Mapping[str, Any]) -> Any:
        """Build and validate the config dataclass for `values[<leaf of key>]`."""
        leaf = self.key.rsplit(".", 1)[-1]
        if leaf not in values:
            raise ConfigError(f"{self.key} is missing; allowed: {', '.join(self.names())}")
        entry = self.get(str(values[leaf]))
        section = self.key.rsplit(".", 1)[0]
        if entry.config_cls is None:
            raise TypeError(f"{self.key}: {entry.name!r} has no config class")
        return build_dataclass(entry.config_cls, values, section)


def build_dataclass(cls: type, values: Mapping[str, Any], section: str) -> Any:
    """Instantiate `cls(**values)`, rejecting unknown keys with the list of allowed ones."""
    allowed = [f.name for f in fields(cls) if f.init]
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ConfigError(
            f"{section}.{unknown[0]} is not a valid key here; allowed: {', '.join(allowed)}"
        )
    return cls(**dict(values))


def discover(package: str, path: Iterable[str]) -> list[str]:
    """Import every public module of `package` (whose `__path__` is `path`), so that each one's
    registrations run: a new method or mode is picked up by adding its module, no import list
    to edit. Modules named with a leading underscore are helpers, imported by whoever uses them.
    Returns the modules' names."""
    found = []
    for info in pkgutil.iter_modules(list(path)):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")
            found.append(info.name)
    return found
