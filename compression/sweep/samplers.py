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

from compression.errors import ConfigError
from compression.registry import Registry

SamplerFactory = Callable[[int | None, dict[str, Any]], BaseSampler]
SAMPLERS: Registry[SamplerFactory] = Registry("hydra.sweeper.sampler")


def _register(name: str) -> Callable[[SamplerFactory], SamplerFactory]:
    return SAMPLERS.register(name, dict)


@_register("tpe")
def tpe(seed: int | None, kwargs: dict[str, Any]) -> BaseSampler:
    # constant_liar: running trials count as "bad" so parallel workers spread out instead of
    # all sampling the same promising point; multivariate+group handle conditional parameters.
    defaults = {"constant_liar": True, "multivariate": True, "group": True}
    with warnings.catch_warnings():  # these options are "experimental" since Optuna 2.x
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, **{**defaults, **kwargs})


@_register("nsgaii")
def nsgaii(seed: int | None, kwargs: dict[str, Any]) -> BaseSampler:
    return optuna.samplers.NSGAIISampler(seed=seed, **kwargs)


@_register("random")
def random(seed: int | None, kwargs: dict[str, Any]) -> BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed, **kwargs)


@_register("grid")
def grid(seed: int | None, kwargs: dict[str, Any]) -> BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed, **kwargs)


@_register("gp")
def gp(seed: int | None, kwargs: dict[str, Any]) -> BaseSampler:
    return optuna.samplers.GPSampler(seed=seed, **kwargs)


@_register("qmc")
def qmc(seed: int | None, kwargs: dict[str, Any]) -> BaseSampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.QMCSampler(seed=seed, **kwargs)


def make_sampler(name: str, seed: int | None, kwargs: dict[str, Any]) -> BaseSampler:
    try:
        return SAMPLERS.get(name).handler(seed, dict(kwargs))
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"hydra.sweeper.sampler_kwargs={kwargs!r} rejected by {name}: {e}")\
            from None
