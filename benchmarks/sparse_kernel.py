"""Masked dense weights vs `pruning.sparse_kernel` (CSR), measured side by side in one process.

    python benchmarks/sparse_kernel.py [--threads 1] [--batch 256] [--repeats 200]
        [--sparsity 0.5 0.8 0.9 0.95 0.98 0.99] [--image-size 28]

For the mlp (LeNet-300-100) at each unstructured sparsity (lowest-magnitude, every layer), prints
the median latency at batch 1 and batch N of the dense model, of the same pruned weights run by
dense kernels (what masking gives: no speed-up) and run by the CSR kernel, and the speed-ups of
both over dense, with calls interleaved so drift hits all alike. Also the bytes held in memory by
each form. Weights are random: latency does not depend on their values, only on the zeros'
count. Use it to choose `pruning.sparse_kernel_min` for your model and machine.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from compression.artifact.format import state_bytes
from compression.data import DataSpec
from compression.measure import latency_side_by_side, retain_freed_memory
from compression.models.build import ModelConfig, build_model
from compression.pruning.sparse_kernel import swap_
from compression.pruning.unstructured import magnitude_masks


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--sparsity", type=float, nargs="+",
                   default=[0.5, 0.8, 0.9, 0.95, 0.98, 0.99])
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    retain_freed_memory()  # as in every run's measurement (see compression/measure/__init__.py)
    spec = DataSpec("bench", 1, args.image_size, 10)
    torch.manual_seed(0)
    dense = build_model(ModelConfig(name="mlp"), spec).eval()
    linear = [n for n, m in dense.named_modules() if isinstance(m, torch.nn.Linear)]
    print(f"threads={args.threads} input=1x{args.image_size}x{args.image_size} model=mlp "
          f"torch={torch.__version__} dense bytes={state_bytes(dense)}")
    print(f"{'sparsity':>8} {'batch':>5} {'dense ms':>9} {'masked ms':>9} {'csr ms':>8} "
          f"{'masked speedup':>14} {'csr speedup':>11} {'csr bytes':>10}")
    for s in args.sparsity:
        masked = copy.deepcopy(dense)
        masks = magnitude_masks({n: masked.get_submodule(n) for n in linear}, s, "layer")
        masks.apply(masked)
        csr = swap_(copy.deepcopy(masked), linear)
        for batch, repeats in ((1, args.repeats), (args.batch, max(20, args.repeats // 5))):
            x = torch.randn(batch, 1, args.image_size, args.image_size)
            with torch.inference_mode():
                torch.testing.assert_close(csr(x), masked(x), rtol=1e-4, atol=1e-5)
                lat = latency_side_by_side(
                    {"dense": (dense, x), "masked": (masked, x), "csr": (csr, x)}, 10, repeats)
            d, m, c = (lat[k].median_ms for k in ("dense", "masked", "csr"))
            print(f"{s:>8.2f} {batch:>5} {d:>9.4f} {m:>9.4f} {c:>8.4f} {d / m:>13.2f}x "
                  f"{d / c:>10.2f}x {state_bytes(csr):>10}")


if __name__ == "__main__":
    main()
