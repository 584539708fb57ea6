"""The one module that uses the torchao library (optional: `pip install torchao==0.18.0`).

torchao quantizes by swapping Linear weights for tensor subclasses (`Int8Tensor`: int8 data +
per-row scales); the artifact stores their inner tensors (see export.py). On CPU its int8
dynamic matmul has no fused kernel in 0.18, so expect it to be much slower than torch.ao's
fbgemm path; benchmarks/quantization.py measures both.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings

from compression.core.lazy import nn

INSTALL_HINT = "pip install torchao==0.18.0"


def available() -> bool:
    """Whether torchao can be imported, without importing it (slow, and chatty about CUDA)."""
    return importlib.util.find_spec("torchao") is not None


def quantize_dynamic_int8(model: nn.Module) -> nn.Module:
    """int8 per-row symmetric weights, int8 per-row activations quantized at run time; in place.
    Only nn.Linear is supported by torchao's config."""
    # torchao logs failures to load its CUDA extensions on CPU-only machines: harmless here.
    logging.getLogger("torchao").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

        quantize_(model, Int8DynamicActivationInt8WeightConfig())
    return model
