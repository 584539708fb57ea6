"""Optuna samplers by name: `hydra.sweeper.sampler=<name>`, seeded by `hydra.sweeper.seed`.

`grid` is not Optuna's GridSampler: the sweeper puts every grid point in the study's trial queue
(`enqueue_trial`) so that conditional parameters add no duplicates and several workers pop
distinct points; the sampler below only serves trials asked after the queue ran dry.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import optuna
from optuna.samplers import BaseSampler

from compression.core.errors import ConfigError
from compression.core.registry import Registry

SamplerFactory = Callable[[int | None, dict[str, Any]], BaseSampler]
SAMPLERS: Registry[SamplerFactory] = Registry("hydra.sweeper.sampler")


def _factory(cls: Callable[..., BaseSampler], defaults: dict[str, Any] | None = None,
             experimental: bool = False) -> SamplerFactory:
    def make(seed: int | None, kwargs: dict[str, Any]) -> BaseSampler:
        with warnings.catch_warnings():
            if experimental:  # options Optuna still labels "experimental"; chosen on purpose
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return cls(seed=seed, **{**(defaults or {}), **kwargs})

    return make


_FACTORIES: dict[str, SamplerFactory] = {
    # constant_liar: running trials count as "bad" so parallel workers spread out instead of
    # all sampling the same promising point; multivariate+group handle conditional parameters.
    "tpe": _factory(optuna.samplers.TPESampler,
                    {"constant_liar": True, "multivariate": True, "group": True},
                    experimental=True),
    "nsgaii": _factory(optuna.samplers.NSGAIISampler),
    "random": _factory(optuna.samplers.RandomSampler),
    "grid": _factory(optuna.samplers.RandomSampler),  # serves asks after the queue ran dry
    "gp": _factory(optuna.samplers.GPSampler),
    "qmc": _factory(optuna.samplers.QMCSampler, experimental=True),
}
for _name, _make in _FACTORIES.items():
    SAMPLERS.register(_name, dict)(_make)


def make_sampler(name: str, seed: int | None, kwargs: dict[str, Any]) -> BaseSampler:
    try:
        return SAMPLERS.get(name).handler(seed, dict(kwargs))
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"hydra.sweeper.sampler_kwargs={kwargs!r} rejected by {name}: {e}")\
            from None
