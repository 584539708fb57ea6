"""Search space: Hydra override strings -> Optuna distributions, and sampled values -> overrides.

| override                          | distribution                                      |
|-----------------------------------|---------------------------------------------------|
| `choice(a,b,c)`, `a,b,c`          | CategoricalDistribution([a, b, c])                |
| `interval(lo,hi)`                 | FloatDistribution(lo, hi)                         |
| `int(interval(lo,hi))`            | IntDistribution(lo, hi)                           |
| `tag(log, interval(lo,hi))`       | FloatDistribution(lo, hi, log=True) (int: Int...) |
| `range(start,stop,step)`          | Int/FloatDistribution(start, last, step): stop is  |
|                                   | excluded, as in Python and Hydra's basic sweeper  |
| `key=value`                       | fixed: passed to every job unchanged              |

A parameter may be conditional (`when`): it is suggested, and overridden, only when other
parameters took given values, e.g. `quantization.bits` only when `quantization=lowbit`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
    Transformer,
)
from hydra.errors import HydraException
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    check_distribution_compatibility,
)
from optuna.trial import FrozenTrial, Trial

from compression.core.errors import ConfigError

log = logging.getLogger(__name__)

Value = None | bool | int | float | str


def _clean(x: float) -> float:
    """0.1 + 2 * 0.1 -> 0.3, not 0.30000000000000004: the value a user would have typed."""
    return float(f"{x:.12g}")


def _range_values(start: float, stop: float, step: float) -> list[float]:
    """Values of range(start, stop, step), stop excluded (floats too); the one rule for ranges."""
    if step == 0 or (stop - start) / step <= 0:
        return []
    n = math.ceil((stop - start) / step - 1e-9)  # tolerance: range(0, 1, 0.1) has 10 values
    return [_clean(start + i * step) for i in range(n)]


@dataclass(frozen=True)
class Param:
    """One swept key. `choices` maps each categorical value to the override text that sets it."""

    key: str  # override key, e.g. `pruning`, `pruning.sparsity`, `+model.width`
    distribution: BaseDistribution
    texts: tuple[str, ...] = ()  # override text of each categorical choice, same order
    when: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def suggest(self, trial: Trial) -> Value:
        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            return trial.suggest_categorical(self.key, d.choices)
        if isinstance(d, IntDistribution):
            return trial.suggest_int(self.key, d.low, d.high, step=d.step, log=d.log)
        assert isinstance(d, FloatDistribution)
        value = trial.suggest_float(self.key, d.low, d.high, step=d.step, log=d.log)
        return value if d.step is None else _clean(value)  # 0.30000000000000004 -> 0.3

    def override(self, value: Value) -> str:
        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            return f"{self.key}={self.texts[d.choices.index(value)]}"
        return f"{self.key}={value}"

    def text(self, value: Value) -> str:
        """The override text of `value` (what `when` conditions compare against)."""
        return self.override(value).split("=", 1)[1]

    def grid_values(self) -> list[Value]:
        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            return list(d.choices)
        if d.step is None or d.log:
            raise ConfigError(
                f"{self.key}: the grid sampler needs discrete values (choice, range or a comma "
                f"list); got a continuous interval"
            )
        if isinstance(d, IntDistribution):
            return list(range(d.low, d.high + 1, d.step))
        return _range_values(d.low, d.high + d.step / 2, d.step)


def distribution(override: Override) -> tuple[BaseDistribution, tuple[str, ...]]:
    """The Optuna distribution of one sweep override (see the module's table)."""
    key, value = override.get_key_element(), override.value()
    if isinstance(value, ChoiceSweep):
        if value.shuffle:
            raise ConfigError(f"{key}: shuffle(...) has no meaning for an Optuna sweep")
        choices = list(override.sweep_iterator(transformer=Transformer.encode))
        texts = tuple(override.sweep_string_iterator())
        return CategoricalDistribution(choices), texts
    if isinstance(value, RangeSweep):
        start, stop, step = value.start, value.stop, value.step
        assert start is not None and stop is not None
        values = _range_values(start, stop, step)
        if not values:
            raise ConfigError(f"{key}=range({start},{stop},{step}) is empty")
        if all(isinstance(x, int) for x in (start, stop, step)):
            return IntDistribution(int(start), int(values[-1]), step=int(step)), ()
        return FloatDistribution(start, values[-1], step=step), ()
    if isinstance(value, IntervalSweep):
        lo, hi, log = value.start, value.end, "log" in value.tags
        assert lo is not None and hi is not None
        if lo >= hi:
            raise ConfigError(f"{key}=interval({lo},{hi}) is empty; the low end must be lower")
        if log and lo <= 0:
            raise ConfigError(f"{key}: a log interval needs a positive low end; got {lo}")
        if isinstance(lo, int) and isinstance(hi, int):
            return IntDistribution(lo, hi, log=log), ()
        return FloatDistribution(float(lo), float(hi), log=log), ()
    raise ConfigError(f"{key}: {override.input_line!r} is not supported by the Optuna sweeper "
                      "(use choice, interval, int(interval), tag(log, ...), range or a comma list)")


@dataclass
class SearchSpace:
    params: list[Param]  # in suggestion order: a conditional param after those it depends on
    fixed: list[str]  # overrides passed unchanged to every job

    @classmethod
    def parse(cls, overrides: Iterable[str], when: Mapping[str, Mapping[str, Any]] | None = None,
              parser: OverridesParser | None = None) -> SearchSpace:
        """Later overrides win over earlier ones with the same key (command line over config)."""
        parser = parser or OverridesParser.create()
        parsed: dict[str, Override] = {}
        for line in overrides:
            try:
                o = parser.parse_override(line)
            except HydraException as e:
                raise ConfigError(f"cannot parse sweep override {line!r}: {e}") from None
            parsed[o.get_key_element()] = o
        params, fixed = {}, []
        for key, o in parsed.items():
            if o.is_sweep_override():
                dist, texts = distribution(o)
                params[key] = Param(key, dist, texts, _conditions(key, (when or {}).get(key)))
            else:
                fixed.append(f"{key}={o.get_value_element_as_str()}")
        unknown = sorted(set(when or {}) - set(params))
        if unknown:
            raise ConfigError(f"hydra.sweeper.when.{unknown[0]}: not a swept parameter; swept: "
                              f"{', '.join(params) or 'none'}")
        return cls(_dependency_order(params), fixed)

    def suggest(self, trial: Trial) -> list[str]:
        """Ask `trial` for every active parameter; returns the job's overrides."""
        texts: dict[str, str] = {}
        out = list(self.fixed)
        for p in self.params:
            if all(texts.get(k) in allowed for k, allowed in p.when.items()):
                value = p.suggest(trial)
                texts[p.key] = p.text(value)
                out.append(p.override(value))
        return out

    def overrides_of(self, params: Mapping[str, Value]) -> list[str]:
        """A finished trial's `params` as the overrides that reproduce it (fixed ones first)."""
        by_key = {p.key: p for p in self.params}
        return [*self.fixed, *(by_key[k].override(val) for k, val in params.items()
                               if k in by_key)]

    def check_compatible(self, study_name: str, trials: Iterable[FrozenTrial]) -> None:
        """Refuse, before anything is queued or run, a space that the study's earlier trials
        contradict (Optuna would raise mid-sweep, e.g. on other choices for a categorical):
        a study is resumed with the search space it was started with."""
        by_key = {p.key: p.distribution for p in self.params}
        seen: set[str] = set()
        for trial in trials:
            for key, old in trial.distributions.items():
                new = by_key.get(key)
                if new is None or key in seen:
                    continue
                seen.add(key)
                try:
                    check_distribution_compatibility(old, new)
                except ValueError:
                    raise ConfigError(
                        f"study {study_name!r} was run with {key}: {_short(old)}, this sweep "
                        f"asks {_short(new)}; resume it with the same search space, or start "
                        "a new study (hydra.sweeper.study_name=...)") from None
                if _short(old) != _short(new):  # Optuna allows it (a range zoomed in, say)
                    log.warning("study %s was run with %s: %s, this sweep asks %s: its trials "
                                "will mix both", study_name, key, _short(old), _short(new))

    def grid(self) -> list[dict[str, Value]]:
        """Every point of a discrete space, inactive conditional parameters left out (no
        duplicates), in a stable order."""
        by_key = {p.key: p for p in self.params}
        points: list[dict[str, Value]] = [{}]
        for p in self.params:  # dependency order: a condition's parameters are already set
            grown = []
            for point in points:
                texts = {k: by_key[k].text(v) for k, v in point.items()}
                if all(texts.get(k) in allowed for k, allowed in p.when.items()):
                    grown.extend({**point, p.key: v} for v in p.grid_values())
                else:
                    grown.append(point)
            points = grown
        return points

    def describe(self) -> str:
        """One line per swept key, e.g. `pruning.sparsity: float[0.5, 0.95] log`, for tags."""
        return "\n".join(f"{p.key}: {_short(p.distribution)}"
                         + (f" when {dict(p.when)}" if p.when else "") for p in self.params)


def _short(d: BaseDistribution) -> str:
    if isinstance(d, CategoricalDistribution):
        return f"choice({', '.join(map(str, d.choices))})"
    assert isinstance(d, IntDistribution | FloatDistribution)
    kind = "int" if isinstance(d, IntDistribution) else "float"
    step = f" step {d.step}" if d.step is not None else ""
    return f"{kind}[{d.low}, {d.high}]{step}{' log' if d.log else ''}"


def _conditions(key: str, raw: Mapping[str, Any] | None) -> dict[str, tuple[str, ...]]:
    """`{quantization: [lowbit]}` or `{quantization: lowbit}` -> {'quantization': ('lowbit',)}."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(f"hydra.sweeper.when.{key}={raw!r} must map parameters to allowed "
                          "values, e.g. {quantization: [lowbit]}")
    out = {}
    for k, allowed in raw.items():
        values = allowed if isinstance(allowed, Sequence) and not isinstance(allowed, str) else [
            allowed]
        out[str(k)] = tuple(str(a).lower() if isinstance(a, bool) else str(a) for a in values)
    return out


def _dependency_order(params: Mapping[str, Param]) -> list[Param]:
    ordered: list[Param] = []
    pending = dict(params)
    while pending:
        ready = [p for p in pending.values() if all(k in {q.key for q in ordered}
                                                    for k in p.when)]
        if not ready:
            p = next(iter(pending.values()))
            missing = sorted(set(p.when) - set(params))
            why = f"{missing[0]} is not swept" if missing else "the conditions form a cycle"
            raise ConfigError(f"hydra.sweeper.when.{p.key}: {why}")
        for p in ready:
            ordered.append(pending.pop(p.key))
    return ordered
