"""ORT fp32 against eager under each setting that could explain the ratio, in one process.

    python benchmarks/ort_settings.py [--models lenet5,resnet] [--batches 1,256] [--rounds 3]
        [--repeats 100] [--warm-calls 1]

For each model (random weights, 1x28x28) and batch size, times interleaved (one thread each,
thread CPU time): eager as the pipeline runs it, eager channels_last, eager with BatchNorm folded
(torch.fx `fuse`), and ORT sessions of the runtime's export with ORT_ENABLE_ALL (the runtime's
setting), ORT_ENABLE_EXTENDED (no NCHWc layout transform), and a fixed-batch export. Prints the
exported graph's op counts and, per candidate, eager ms / its ms: the median and range over
rounds. docs/deploy.md ("ORT fp32 against eager") reads it.
"""

from __future__ import annotations

import argparse
import collections
import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.runtimes import cpu_line, interleaved
from compression.data import DataSpec
from compression.models.build import ModelConfig, build_model
from compression.runtime.base import OnnxConfig
from compression.runtime.onnx_export import INPUT, OUTPUT, export_onnx, quiet


def ort_call(path: Path, level: str) -> object:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    opts.log_severity_level = 3
    run = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]).run
    return lambda a: run(None, {INPUT: a})


def candidates(name: str, batch: int, tmp: Path) -> dict[str, tuple[object, object]]:
    import onnx
    from torch.fx.experimental.optimization import fuse

    torch.manual_seed(0)
    model = build_model(ModelConfig(name=name), DataSpec("fashion_mnist", 1, 28, 10)).eval()
    dynamic = export_onnx(model, torch.zeros(1, 1, 28, 28), tmp / f"{name}.onnx", OnnxConfig())
    fixed = tmp / f"{name}_b{batch}.onnx"
    with quiet(), torch.no_grad():
        torch.onnx.export(model, (torch.zeros(batch, 1, 28, 28),), input_names=[INPUT],
                          output_names=[OUTPUT], opset_version=OnnxConfig().opset,
                          dynamo=True, verbose=False).save(str(fixed))
    ops = collections.Counter(n.op_type for n in onnx.load(str(dynamic)).graph.node)
    print(f"{name}: exported graph {dict(ops)}")
    x = torch.randn(batch, 1, 28, 28)
    xn = np.ascontiguousarray(x.numpy())
    cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    return {
        "eager (pipeline: NCHW, BatchNorm as its own op)": (model, x),
        "eager channels_last": (cl, x.contiguous(memory_format=torch.channels_last)),
        "eager BatchNorm folded": (fuse(copy.deepcopy(model)), x),
        "ORT ORT_ENABLE_ALL (the runtime)": (ort_call(dynamic, "ORT_ENABLE_ALL"), xn),
        "ORT ORT_ENABLE_EXTENDED (no NCHWc)": (ort_call(dynamic, "ORT_ENABLE_EXTENDED"), xn),
        "ORT ORT_ENABLE_ALL, batch fixed at export": (ort_call(fixed, "ORT_ENABLE_ALL"), xn),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="lenet5,resnet")
    p.add_argument("--batches", default="1,256")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=100)
    p.add_argument("--warm-calls", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(1)
    print(f"CPU: {cpu_line()}; torch threads 1, ORT intra/inter-op 1, thread CPU time, "
          f"{args.rounds} rounds, warm_calls={args.warm_calls}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            for batch in (int(b) for b in args.batches.split(",")):
                cands = candidates(name, batch, Path(tmp))
                repeats = args.repeats if batch == 1 else max(10, args.repeats // 10)
                ms: dict[str, list[float]] = collections.defaultdict(list)
                for _ in range(args.rounds):
                    for k, v in interleaved(cands, 3, repeats, time.thread_time_ns,
                                            args.warm_calls).items():
                        ms[k].append(v)
                eager = np.array(ms[next(iter(cands))])
                for k, v in ms.items():
                    r = eager / np.array(v)
                    print(f"{name:>7} b{batch:<4} {k:<46} {np.median(v):9.3f} ms  "
                          f"eager/this {np.median(r):5.2f}x ({r.min():.2f}-{r.max():.2f})",
                          flush=True)


if __name__ == "__main__":
    main()
