"""torch, numpy and friends, imported on first use instead of at import time.

Checking a config (`RunConfig.from_cfg`: every config dataclass, the pruning / quantization
registries and the data loaders, all discovered by importing their modules) must not wait for
torch: `train.py --help` and a bad value answer at once. So a module on that path writes

    from compression.core.lazy import nn, torch

instead of `import torch` / `from torch import nn`, and uses torch only inside functions: the
first attribute read (`torch.zeros`, `nn.Module`) imports the real module, after which reads
cost what they cost on the real module. Module-level code that needs torch (a class deriving
from `nn.Module`, a tuple of layer classes) goes in a `_` helper module imported inside the
functions that use it, or becomes names (`nn_kinds`); `@no_grad` / `@inference_mode` stand for
the torch decorators. tests/test_startup.py enforces it; docs/extending.md shows the pattern.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import types
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


class LazyModule(types.ModuleType):
    """Stands for the module `name` until an attribute is read, then holds the real one's."""

    def __init__(self, name: str) -> None:
        super().__init__(name)

    def __getattr__(self, attr: str) -> Any:  # only for names not (yet) copied here
        if attr.startswith("__") and attr.endswith("__") and attr != "__version__":
            raise AttributeError(attr)  # copy, pickle, inspect probing: no import for that
        module = importlib.import_module(self.__name__)
        for key, value in module.__dict__.items():  # later reads skip this method
            self.__dict__.setdefault(key, value)
        return getattr(module, attr)  # a submodule that torch imports on demand, too

    def __dir__(self) -> list[str]:
        return dir(importlib.import_module(self.__name__))


torch: Any = LazyModule("torch")
nn: Any = LazyModule("torch.nn")
F: Any = LazyModule("torch.nn.functional")
fx: Any = LazyModule("torch.fx")
np: Any = LazyModule("numpy")
safetensors_torch: Any = LazyModule("safetensors.torch")


def _under(context: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """A decorator running `fn` under `torch.<context>()`, torch imported at the first call."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with getattr(torch, context)():
                return fn(*args, **kwargs)

        return wrapper

    return decorate


no_grad = _under("no_grad")  # `@torch.no_grad()` without importing torch at definition
inference_mode = _under("inference_mode")  # `@torch.inference_mode()`, likewise


def is_traceable_wrapper_subclass(value: Any) -> bool:
    """torch.utils._python_dispatch's test for a tensor subclass (torchao's int8 weights)."""
    from torch.utils._python_dispatch import is_traceable_wrapper_subclass as check

    return check(value)


def nn_kinds(names: tuple[str, ...] | list[str]) -> tuple[type, ...]:
    """torch.nn classes by name, for tables a config check reads without torch (`isinstance(m,
    nn_kinds(("Linear", "Conv2d")))`)."""
    return tuple(getattr(nn, name) for name in names)


def lazy_exports(package: str, submodules: list[str]) -> Callable[[str], Any]:
    """A package's `__getattr__` (PEP 562) for the names it re-exports from `submodules`: on the
    first read of a name the package does not hold, the submodules are imported in order until
    one has it, so checking a config that needs only `package.config` does not import the rest
    of the package. The name is then set on the package (later reads are plain reads). The
    package's `__all__` and a TYPE_CHECKING import list the names for linters and mypy."""

    def __getattr__(name: str) -> Any:
        # dunder probes (copy, pickle, inspect) and submodule names (`from package import sub`
        # asks here first, then imports it) are not re-exported names
        if not name.startswith("__") and importlib.util.find_spec(f"{package}.{name}") is None:
            for sub in submodules:
                module = importlib.import_module(f"{package}.{sub}")
                if hasattr(module, name):
                    value = getattr(module, name)
                    setattr(importlib.import_module(package), name, value)
                    return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
