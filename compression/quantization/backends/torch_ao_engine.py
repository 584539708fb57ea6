"""torch.ao's quantized engine (x86, fbgemm, onednn, qnnpack): setting it, scoping it, and
`engine="auto"`, which times the candidate engines on the converted model (batch 1 and a
calibration batch) and keeps the fastest (`pick_engine`). Also `quiet`, the warning filter every
torch.ao call here runs under: the base the other torch_ao_* modules build on."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from compression.core.lazy import nn, torch
from compression.quantization._engines import AUTO, AUTO_CANDIDATES, DEFAULT_ENGINE
from compression.quantization.timing import time_candidates


@contextmanager
def quiet() -> Iterator[None]:
    """torch.ao warns on every call that it is deprecated (and about observer defaults)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        yield


def concrete_engine(engine: str) -> str:
    """The engine kernels run on: `auto` before a timed pick (e.g. a skeleton) is the default."""
    return DEFAULT_ENGINE if engine == AUTO else engine


def set_engine(engine: str) -> None:
    engine = concrete_engine(engine)
    if engine not in torch.backends.quantized.supported_engines:
        raise RuntimeError(
            f"quantization.engine={engine!r} is not supported by this torch build; "
            f"supported: {', '.join(torch.backends.quantized.supported_engines)}"
        )
    torch.backends.quantized.engine = engine


def reduce_range(engine: str) -> bool:
    """x86/fbgemm int8 GEMMs add pairs of u8*s8 products in int16 (vpmaddubsw) on CPUs without
    VNNI; 7-bit activations keep that from saturating. torch's default qconfigs do the same.
    `auto` calibrates for the strictest candidate (it may pick x86/fbgemm)."""
    return engine in ("x86", "fbgemm", AUTO)


def auto_candidates(symmetric_weights: bool = True) -> list[str]:
    """Engines `auto` times: this build's x86 engines (oneDNN needs symmetric weights)."""
    return [e for e in AUTO_CANDIDATES if e in torch.backends.quantized.supported_engines
            and (symmetric_weights or e != "onednn")]


@contextmanager
def engine_set(engine: str) -> Iterator[None]:
    """`engine` as torch's quantized engine inside the block, the previous one restored after."""
    before = torch.backends.quantized.engine
    set_engine(engine)
    try:
        yield
    finally:
        torch.backends.quantized.engine = before


def pick_engine(build: Callable[[str], nn.Module], candidates: list[str],
                batches: list[torch.Tensor], budget_s: float = 3.0
                ) -> tuple[str, nn.Module, dict[str, float]]:
    """Build the model with every candidate engine and keep the fastest, as cudnn.benchmark
    does for convolution algorithms. Each is timed at every batch size in `batches` (batch 1
    and a calibration batch), calls interleaved so machine drift hits all alike; the score is
    the geometric mean over batch sizes of the median latency (ms). Returns (engine, model,
    scores). Engines that fail to build or run are skipped; ties keep the earlier candidate."""
    models: dict[str, nn.Module] = {}
    for engine in candidates:
        try:
            with engine_set(engine):
                m = build(engine)
                with torch.inference_mode():
                    for x in batches:
                        m(x)
            models[engine] = m
        except RuntimeError:
            continue
    if not models:
        raise RuntimeError(f"quantization.engine=auto: no engine of {candidates} could run")
    scores: dict[str, float] = {}
    if len(models) > 1:
        scores = time_candidates(dict(models), batches, budget_s)
    best = min(models, key=lambda e: scores.get(e, 0.0))
    return best, models[best], scores
