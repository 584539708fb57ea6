"""fp32 vs dynamic int8 latency of the mlp, measured side by side in one process.

    python benchmarks/dynamic_int8_latency.py [--threads N] [--batch 256] [--repeats 200]

Prints, for digits (8x8) and fashion_mnist-sized (28x28) inputs, the median latency of both
models at batch 1 and batch N (calls interleaved so drift hits both alike), their ratio, and the
artifact bytes of each. Weights are random: latency and size do not depend on their values.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from compression.artifact.format import save_artifact
from compression.data import DataSpec
from compression.measure import latency_side_by_side
from compression.models.build import ModelConfig, build_model
from compression.quantization import QUANTIZERS


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=200)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    int8 = QUANTIZERS.build_config({"mode": "dynamic_int8"})
    none = QUANTIZERS.build_config({"mode": "none"})
    print(f"threads={args.threads} engine={int8.engine} torch={torch.__version__}")
    print(f"{'input':>8} {'batch':>6} {'fp32 ms':>9} {'int8 ms':>9} {'fp32/int8':>10}")
    tmp = Path(tempfile.mkdtemp())
    for spec in (DataSpec("digits", 1, 8, 10), DataSpec("fashion_mnist", 1, 28, 10)):
        torch.manual_seed(0)
        cfg = ModelConfig(name="mlp")
        fp32 = build_model(cfg, spec).eval()
        q = QUANTIZERS.get("dynamic_int8").handler.quantize(fp32, int8, None).model
        for batch, repeats in ((1, args.repeats), (args.batch, max(20, args.repeats // 5))):
            x = torch.randn(batch, 1, spec.image_size, spec.image_size)
            lat = latency_side_by_side({"fp32": (fp32, x), "int8": (q, x)}, 10, repeats)
            a, b = lat["fp32"].median_ms, lat["int8"].median_ms
            print(f"{spec.image_size:>6}px {batch:>6} {a:>9.4f} {b:>9.4f} {a / b:>9.2f}x")
        save_artifact(fp32, tmp / "a", model_cfg=cfg, spec=spec, quant_cfg=none, sparse=False)
        save_artifact(q, tmp / "b", model_cfg=cfg, spec=spec, quant_cfg=int8)
        sa, sb = (tmp / "a").stat().st_size, (tmp / "b").stat().st_size
        print(f"{spec.image_size:>6}px  size: fp32 {sa} B, int8 {sb} B, int8/fp32 {sb / sa:.3f}")


if __name__ == "__main__":
    main()
