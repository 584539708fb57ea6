"""Dense vs 50%-channel structured pruning (ours and Torch-Pruning's), measured side by side.

    pip install -r benchmarks/requirements.txt   # torch-pruning, benchmark-only
    python benchmarks/structured_pruning.py [--threads 1] [--batch 256] [--ratio 0.5]
        [--image-size 28] [--width 1.0] [--repeats 200] [--rounds 3] [--clock wall|cpu]
        [--round-to 1] [--fold-bn] [--channels-last] [--no-explain]

For lenet5 and the residual CNN (random weights: latency does not depend on their values), prints
batch-1 and batch-N median latency of the dense model, of our physically pruned model and of
Torch-Pruning's at the same ratio (all calls interleaved, so drift hits all alike; the whole
measurement is repeated `--rounds` times and the round with the median speed-up is shown, with
the min-max of the speed-up over rounds), then our measured speed-up, the theoretical (FLOPs)
speed-up and their ratio (target >= 0.8), and our speed-up relative to Torch-Pruning's (target
>= 1; 0.95-1 is reported as "met within noise"). Each target is printed as met / NOT met.
Our model and Torch-Pruning's have the same shapes at round_to=1 (same parameter count), so
`ours/tp` away from 1 is a gauge of the timing noise of the machine.

`--clock cpu` times with the thread's CPU clock instead of the wall clock: on a machine shared
with other work it leaves out the time the benchmark was descheduled (not cache or memory-bus
interference). `--fold-bn` folds BatchNorms into their convs and `--channels-last` runs in NHWC;
either applies to ALL models (dense, ours, Torch-Pruning's) alike, so the speed-ups stay fair.

The `why` line under each row comes from torch.profiler: the share of time in the kernels the
FLOP count describes (convolutions, matmuls) versus everything else (pooling, activations,
BatchNorm, adds, allocation, dispatch and Python overhead, whose cost scales at best linearly
with the channels and at batch 1 is mostly fixed per op), how much each part shrank, and the
speed-up that would be reached if the FLOP kernels shrank exactly by the FLOP ratio while the rest
stayed as measured (`bound`). When `bound` itself is below 0.8 x FLOPs, the target is out of
reach for this model without making the non-FLOP ops cheaper.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from compression.data import DataSpec
from compression.measure import flops_per_layer, latency_side_by_side
from compression.models.build import ModelConfig, build_model
from compression.pruning.structured import remove_channels_
from compression.pruning.surgery import fold_batchnorm_

OUTPUT_LAYER = {"lenet5": "fc3", "resnet": "fc"}
# Kernels whose cost the FLOP count (FlopCounterMode: convolutions and matmuls) describes; the
# self time of their dispatch wrappers (aten::conv2d, aten::linear, ...) counts as overhead.
FLOP_KERNELS = {"aten::mkldnn_convolution", "aten::_slow_conv2d_forward", "aten::addmm",
                "aten::mm", "aten::bmm", "aten::slow_conv_dilated2d", "aten::mkldnn_linear",
                "aten::_nnpack_spatial_convolution", "aten::_convolution_pointwise"}
TP_NOISE = 0.95  # ours/tp in [0.95, 1): parity within timing noise


def torch_pruning_copy(model: nn.Module, ratio: float, example: torch.Tensor, output: str,
                       round_to: int) -> nn.Module | None:
    """Torch-Pruning's magnitude (L1) channel pruning of a copy; None when not installed.
    Note: its round_to rounds the KEPT channels down (ours rounds up)."""
    try:
        import torch_pruning as tp
    except ImportError:
        return None
    twin = copy.deepcopy(model)
    pruner = tp.pruner.MagnitudePruner(
        twin, example, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=ratio,
        ignored_layers=[twin.get_submodule(output)], round_to=round_to if round_to > 1 else None)
    pruner.step()
    return twin.eval()


class ChannelsLast(nn.Module):
    """Runs `model` in NHWC: weights converted once, the input on every call."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.contiguous(memory_format=torch.channels_last))


def deploy(model: nn.Module, example: torch.Tensor, fold: bool, channels_last: bool
           ) -> nn.Module:
    model = copy.deepcopy(model).eval()
    if fold:
        fold_batchnorm_(model, example)
    return ChannelsLast(model).eval() if channels_last else model


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.inference_mode()
def op_times(model: nn.Module, x: torch.Tensor, calls: int) -> tuple[float, dict[str, float]]:
    """(share of the profiled wall time spent in FLOP kernels, {other aten op: its share}),
    from self times over `calls`. Shares, not milliseconds: the profiler slows every op down,
    so its times do not add up to an unprofiled call's."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(3):
        model(x)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(calls):
            model(x)
        wall_ms = (time.perf_counter() - t0) * 1e3
    times = {e.key: e.self_cpu_time_total / 1e3 / wall_ms for e in prof.key_averages()
             if not e.key.startswith("ProfilerStep")}
    flop = sum(t for k, t in times.items() if k in FLOP_KERNELS)
    return min(flop, 1.0), {k: t for k, t in times.items() if k not in FLOP_KERNELS}


def explain(dense: nn.Module, ours: nn.Module, x: torch.Tensor, d_ms: float, o_ms: float,
            theory: float, calls: int, windows: int = 3) -> str:
    """The `why` line: where the measured time goes and the bound it sets (see docstring). The
    FLOP kernels' share of the time comes from the profiler (median of `windows` profiling
    windows, dense and ours interleaved) and is applied to the measured medians; the rest holds
    pooling, activations, BatchNorm, adds, allocation, dispatch and Python overhead."""
    runs = [(op_times(dense, x, calls), op_times(ours, x, calls)) for _ in range(windows)]
    flop_d = statistics.median(d[0] for d, _ in runs) * d_ms
    flop_o = statistics.median(o[0] for _, o in runs) * o_ms
    other = runs[0][1][1]
    rest_d, rest_o = d_ms - flop_d, o_ms - flop_o
    bound = d_ms / (flop_d / theory + rest_o)
    top = max(other, key=other.get) if other else "-"
    return (f"why: FLOP kernels {flop_d / d_ms:.0%} of dense, {flop_o / o_ms:.0%} of ours time, "
            f"shrank {flop_d / max(flop_o, 1e-9):.2f}x (FLOPs {theory:.2f}x); the rest shrank "
            f"{rest_d / max(rest_o, 1e-9):.2f}x and is {rest_o / o_ms:.0%} of ours (largest op "
            f"{top.removeprefix('aten::')} {other.get(top, 0):.0%}); bound if FLOP "
            f"kernels met FLOPs: {bound:.2f}x = {bound / theory:.2f} of FLOPs")


def verdict(value: float, target: float, noise: float | None = None) -> str:
    if value >= target:
        return "met"
    if noise is not None and value >= noise:
        return "met within noise"
    return "NOT met"


def measure(models: dict[str, nn.Module], x: torch.Tensor, repeats: int, rounds: int,
            clock: Callable[[], int]) -> tuple[dict[str, float], float, float]:
    """The round with the median dense/ours speed-up, and the speed-up's min and max."""
    runs = [{k: lat.median_ms for k, lat in latency_side_by_side(
        {k: (m, x) for k, m in models.items()}, 10, repeats, clock).items()}
        for _ in range(rounds)]
    runs.sort(key=lambda r: r["dense"] / r["ours"])
    speedups = [r["dense"] / r["ours"] for r in runs]
    return runs[len(runs) // 2], speedups[0], speedups[-1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    p.add_argument("--round-to", type=int, default=1)
    p.add_argument("--fold-bn", action="store_true")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--no-explain", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    clock = time.thread_time_ns if args.clock == "cpu" else time.perf_counter_ns
    spec = DataSpec("bench", 1, args.image_size, 10)
    example = spec.example_input(1)
    print(f"threads={args.threads} input=1x{args.image_size}x{args.image_size} ratio={args.ratio}"
          f" width={args.width} round_to={args.round_to} fold_bn={args.fold_bn} "
          f"channels_last={args.channels_last} clock={args.clock} rounds={args.rounds} "
          f"torch={torch.__version__}")
    head = (f"{'model':>7} {'batch':>5} {'dense ms':>9} {'ours ms':>8} {'tp ms':>7} "
            f"{'measured':>9} {'(min-max)':>11} {'FLOPs':>6} {'meas/FLOPs':>10} "
            f"{'tp speedup':>10} {'ours/tp':>8}")
    print(head)
    for name in ("lenet5", "resnet"):
        torch.manual_seed(0)
        dense = build_model(ModelConfig(name=name, width=args.width), spec).eval()
        ours = copy.deepcopy(dense)
        remove_channels_(ours, args.ratio, example, round_to=args.round_to)
        ours.eval()
        tp_model = torch_pruning_copy(dense, args.ratio, example, OUTPUT_LAYER[name],
                                      args.round_to)
        theory = flops_per_layer(dense, example)[0] / flops_per_layer(ours, example)[0]
        run = {k: deploy(m, example, args.fold_bn, args.channels_last)
               for k, m in (("dense", dense), ("ours", ours), ("tp", tp_model)) if m is not None}
        for batch, repeats in ((1, args.repeats), (args.batch, max(10, args.repeats // 5))):
            x = torch.randn(batch, 1, args.image_size, args.image_size)
            lat, lo, hi = measure(run, x, repeats, args.rounds, clock)
            d, o = lat["dense"], lat["ours"]
            t = lat.get("tp", float("nan"))
            ratio, vs_tp = d / o / theory, t / o
            print(f"{name:>7} {batch:>5} {d:>9.3f} {o:>8.3f} {t:>7.3f} {d / o:>8.2f}x "
                  f"{f'({lo:.2f}-{hi:.2f})':>11} {theory:>5.2f}x {ratio:>10.2f} "
                  f"{d / t:>9.2f}x {vs_tp:>8.2f}")
            print(f"{'':>13} targets: meas/FLOPs >= 0.8 {verdict(ratio, 0.8)}; ours >= tp "
                  f"{verdict(vs_tp, 1.0, TP_NOISE) if 'tp' in lat else 'n/a (not installed)'}")
            if not args.no_explain:
                calls = 100 if batch == 1 else 5
                print(f"{'':>13} {explain(run['dense'], run['ours'], x, d, o, theory, calls)}")
        tp_params = params(tp_model) if tp_model is not None else -1
        print(f"{'':>7} params: dense {params(dense)}, ours {params(ours)}, tp {tp_params}")


if __name__ == "__main__":
    main()
