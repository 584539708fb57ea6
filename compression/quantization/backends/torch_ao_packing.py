"""One packed copy of torch.ao's int8 weights per input shape (`PerShapePacking`).

oneDNN's int8 kernels (engine onednn, and engine x86's convolutions on CPUs with AVX512-VNNI)
cache their primitive for the first input shape and thread count a packed weight sees; any other
shape takes a slower path for good (lenet5, batch 1 after an evaluation at batch 512: about 1.6x
slower). `PerShapePacking` keeps one packed copy of the weights per input shape instead.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from compression.core.lazy import nn, torch
from compression.quantization.backends.torch_ao_engine import engine_set


def _packed_holder(m: nn.Module) -> Any:
    """The object whose `_packed_params` attribute is the packed weight (a ScriptObject) of a
    quantized Conv / Linear (static or dynamic), or None for other modules."""
    if not (callable(getattr(m, "_weight_bias", None)) and hasattr(m, "set_weight_bias")):
        return None
    holder = getattr(m, "_packed_params", None)
    if isinstance(holder, nn.Module):  # Linear: LinearPackedParams wraps the ScriptObject
        return holder if hasattr(holder, "_packed_params") else None
    return m if holder is not None else None


class PerShapePacking:
    """One packed copy of every int8 weight per (input shape, thread count), swapped in by a
    forward pre-hook on the model. oneDNN caches its primitive in the packed weight for the
    first (shape, threads) it runs with and takes a slower path for every other one; a fresh
    copy per key gives each key the cached path. At most MAX_KEYS copies are kept (least
    recently used dropped). Not copied or pickled with the model; cleared when a state_dict is
    loaded (the copies would hold the old weights). All copies hold the same weights, so
    threads calling one model with different shapes at once get correct results (only the
    cached path may be missed); the swap itself is locked."""

    MAX_KEYS = 8

    def __init__(self, engine: str) -> None:
        self.engine = engine
        self.key: tuple | None = None
        self.packs: OrderedDict[tuple, list[Any]] = OrderedDict()
        self.lock = threading.Lock()

    def __deepcopy__(self, memo: dict) -> PerShapePacking:
        return PerShapePacking(self.engine)

    def __getstate__(self) -> dict[str, Any]:
        return {"engine": self.engine}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["engine"])

    @staticmethod
    def install(model: nn.Module, engine: str) -> nn.Module:
        """Idempotent. A deep copy gets its own (empty) copies: nn.Module copies the hooks and
        this object (see __deepcopy__); a GraphModule drops forward hooks, so it reinstalls."""
        model.__dict__["_per_shape_packing"] = PerShapePacking(engine)
        if _swap_packs not in model._forward_pre_hooks.values():
            model.register_forward_pre_hook(_swap_packs)
        if _clear_packs not in model._load_state_dict_post_hooks.values():
            model.register_load_state_dict_post_hook(_clear_packs)
        if isinstance(model, torch.fx.GraphModule):
            hooks = model._deepcopy_hooks
            hooks[:] = [h for h in hooks if not isinstance(h, _Reinstall)] + [_Reinstall(engine)]
        return model

    def swap(self, model: nn.Module, key: tuple) -> None:
        with self.lock:
            if key != self.key:
                self._swap(model, key)

    def clear(self) -> None:
        with self.lock:
            self.key = None
            self.packs.clear()

    def _swap(self, model: nn.Module, key: tuple) -> None:
        holders = [h for h in map(_packed_holder, model.modules()) if h is not None]
        if self.key is not None:  # the current copies have run with self.key
            self.packs[self.key] = [h._packed_params for h in holders]
        if key in self.packs:
            self.packs.move_to_end(key)
            for h, pack in zip(holders, self.packs[key], strict=True):
                h._packed_params = pack
        elif self.key is not None:  # fresh copies: their cache is filled by this key's call
            with engine_set(self.engine):
                for m in model.modules():
                    if _packed_holder(m) is not None:
                        m.set_weight_bias(*m._weight_bias())
        while len(self.packs) >= self.MAX_KEYS:
            self.packs.popitem(last=False)
        self.key = key


class _Reinstall:
    """GraphModule deepcopy hook (a class, so the copy's hook list deep-copies cleanly)."""

    def __init__(self, engine: str) -> None:
        self.engine = engine

    def __call__(self, copied: nn.Module) -> None:
        PerShapePacking.install(copied, self.engine)


def _swap_packs(model: nn.Module, args: tuple) -> None:
    x = args[0] if args else None
    if not isinstance(x, torch.Tensor):
        return
    key = (tuple(x.shape), torch.get_num_threads())
    state = model.__dict__.get("_per_shape_packing")
    if state is not None and key != state.key:
        state.swap(model, key)


def _clear_packs(model: nn.Module, incompatible_keys: Any) -> None:
    state = model.__dict__.get("_per_shape_packing")
    if state is not None:
        state.clear()
