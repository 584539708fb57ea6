"""Dense vs 50%-channel structured pruning (ours and Torch-Pruning's), measured side by side.

    pip install -r benchmarks/requirements.txt   # torch-pruning, benchmark-only
    python benchmarks/structured_pruning.py [--threads 1] [--batch 256] [--ratio 0.5]
                                            [--image-size 28] [--width 1.0] [--repeats 200]

For lenet5 and the residual CNN (random weights: latency does not depend on their values), prints
batch-1 and batch-N median latency of the dense model, of our physically pruned model and of
Torch-Pruning's at the same ratio (all calls interleaved, so drift hits all alike), then our
measured speed-up, the theoretical (FLOPs) speed-up and their ratio (target >= 0.8), and our
speed-up relative to Torch-Pruning's (target >= 1, within timing noise).
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from compression.data import DataSpec
from compression.metrics import flops_per_layer, latency_side_by_side
from compression.models import ModelConfig, build_model
from compression.pruning.structured import remove_channels_

OUTPUT_LAYER = {"lenet5": "fc3", "resnet": "fc"}


def torch_pruning_copy(model: nn.Module, ratio: float, example: torch.Tensor,
                       output: str) -> nn.Module | None:
    """Torch-Pruning's magnitude (L1) channel pruning of a copy; None when not installed."""
    try:
        import torch_pruning as tp
    except ImportError:
        return None
    twin = copy.deepcopy(model)
    pruner = tp.pruner.MagnitudePruner(
        twin, example, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=ratio,
        ignored_layers=[twin.get_submodule(output)])
    pruner.step()
    return twin.eval()


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=200)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    spec = DataSpec("bench", 1, args.image_size, 10)
    example = spec.example_input(1)
    print(f"threads={args.threads} input=1x{args.image_size}x{args.image_size} ratio={args.ratio}"
          f" width={args.width} torch={torch.__version__}")
    head = (f"{'model':>7} {'batch':>5} {'dense ms':>9} {'ours ms':>8} {'tp ms':>7} "
            f"{'measured':>9} {'FLOPs':>6} {'meas/FLOPs':>10} {'tp speedup':>10} {'ours/tp':>8}")
    print(head)
    for name in ("lenet5", "resnet"):
        torch.manual_seed(0)
        dense = build_model(ModelConfig(name=name, width=args.width), spec).eval()
        ours = copy.deepcopy(dense)
        remove_channels_(ours, args.ratio, example)
        ours.eval()
        tp_model = torch_pruning_copy(dense, args.ratio, example, OUTPUT_LAYER[name])
        theory = flops_per_layer(dense, example)[0] / flops_per_layer(ours, example)[0]
        for batch, repeats in ((1, args.repeats), (args.batch, max(10, args.repeats // 5))):
            x = torch.randn(batch, 1, args.image_size, args.image_size)
            models = {"dense": (dense, x), "ours": (ours, x)}
            if tp_model is not None:
                models["tp"] = (tp_model, x)
            lat = latency_side_by_side(models, warmup=10, repeats=repeats)
            d, o = lat["dense"].median_ms, lat["ours"].median_ms
            t = lat["tp"].median_ms if "tp" in lat else float("nan")
            print(f"{name:>7} {batch:>5} {d:>9.3f} {o:>8.3f} {t:>7.3f} {d / o:>8.2f}x "
                  f"{theory:>5.2f}x {d / o / theory:>10.2f} {d / t:>9.2f}x {t / o:>8.2f}")
        tp_params = params(tp_model) if tp_model is not None else -1
        print(f"{'':>7} params: dense {params(dense)}, ours {params(ours)}, tp {tp_params}")


if __name__ == "__main__":
    main()
