"""Peak memory and time of a whole run on an image folder too large to hold decoded in memory.

Writes N PNGs (Fashion-MNIST images, resized to SIZE x SIZE and stored as RGB, 10 class
folders), then runs `python train.py data=image_folder ...` on them (baseline training, pruning,
fine-tuning, export, evaluation, latency) in a child process and prints its wall time and peak
resident memory (ru_maxrss of the child: with data.num_workers=0 every decode happens in it).
The decoded float32 images would take N * 3 * SIZE^2 * 4 bytes; above data.max_memory_mb the
folder streams from disk through a DataLoader.

    python benchmarks/stream_image_folder.py                 # 20,000 PNGs at 96x96 RGB
    python benchmarks/stream_image_folder.py --n 2000 --size 32
"""

from __future__ import annotations

import argparse
import gzip
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
FASHION = Path("/usr/share/datasets/fashion-mnist")


def stream_cnn(num_classes: int = 10) -> nn.Module:
    """A small CNN for RGB inputs of any size (strided stem, global pooling)."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(32 * 16, num_classes),
    )


def write_folder(out: Path, n: int, size: int) -> float:
    from PIL import Image

    with gzip.open(FASHION / "train-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(FASHION / "train-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    t0 = time.perf_counter()
    for i in range(n):
        folder = out / f"class_{labels[i]}"
        folder.mkdir(parents=True, exist_ok=True)
        img = Image.fromarray(images[i]).resize((size, size)).convert("RGB")
        img.save(folder / f"{i:05d}.png")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--folder", type=Path, default=ROOT / "outputs" / "bench_stream")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--stream", choices=["auto", "true"], default="auto",
                    help="auto: stream when the decoded images exceed data.max_memory_mb")
    a = ap.parse_args()
    folder = a.folder / f"{a.n}x{a.size}"
    if not folder.is_dir():
        print(f"writing {a.n} PNGs to {folder} ...", flush=True)
        print(f"  {write_folder(folder, a.n, a.size):.1f} s")
    files = sum(1 for _ in folder.rglob("*.png"))
    disk_mb = sum(p.stat().st_size for p in folder.rglob("*.png")) / 2**20
    decoded_mb = files * 3 * a.size * a.size * 4 / 2**20
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "train.py", "model=custom",
               "model._target_=benchmarks.stream_image_folder.stream_cnn",
               "data=image_folder", f"data.root={folder}", f"data.num_workers={a.workers}",
               "train.epochs=1", "finetune.epochs=1", "pruning=unstructured",
               "pruning.sparsity=0.5", f"data.stream={'null' if a.stream == 'auto' else 'true'}",
               f"tracking.uri=sqlite:///{tmp}/mlflow.db",
               f"paths.cache={tmp}/cache", f"paths.artifacts={tmp}/artifacts"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"run failed:\n{proc.stderr[-3000:]}")
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
    output = proc.stdout + proc.stderr
    summary = [ln for ln in output.splitlines() if "pruning=unstructured@" in ln]
    streamed = any("streamed from disk" in ln for ln in output.splitlines())
    print(f"{files} PNGs {a.size}x{a.size} RGB: {disk_mb:.0f} MB on disk, {decoded_mb:.0f} MB "
          f"decoded (float32); {'streamed' if streamed else 'held in memory'}, "
          f"workers={a.workers}")
    print(f"whole run (train 1 epoch, prune, fine-tune 1 epoch, export, evaluate, time): "
          f"{wall:.0f} s wall, peak RSS {peak_mb:.0f} MB")
    print(summary[-1].split("] - ")[-1] if summary else output[-500:])


if __name__ == "__main__":
    main()
