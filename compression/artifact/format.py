"""The deployable artifact: a safetensors file whose header records how to rebuild the model.

Why safetensors: it loads without pickle, and its byte count is honest - header plus raw tensor
bytes. Tensors are stored in the smallest of these encodings, chosen per tensor:

- `dense`: the tensor as is (fp32, fp16, int8, ...);
- `bitmask`: a packed bitmap of nonzero positions (1 bit per element) plus the nonzero values,
  used when it is smaller than dense (any sparsity above 1/(8*itemsize)).

Quantized tensors are stored as their integer representation (1 byte per int8 element) with
their scales (float32) and zero points (int16), narrowed from torch's float64 / int64 when that
is exact, so an int8 model costs int8 bytes and a pruned int8 model gets both savings at once.
An affine quantized tensor holds a pruned 0.0 as its zero point, so its bitmask marks the
positions that differ from the zero point instead (the entry then says `"fill": "zero_point"`;
per-channel zero points broadcast along the channel axis).

Packed low-bit weights (compression.quantization.lowbit) are plain uint8 buffers (b-bit two's
complement codes, little-endian bitstream, see quantization/packing.py) plus fp16 scales; a zero
weight packs to zero bits, so the same bitmask encoding drops pruned bytes.

Tensor-subclass weights (torchao's `Int8Tensor`, ...) are stored as their inner tensors
(`key#qdata`, `key#scale`, ...) under an entry of kind `subclass`; the loader takes the rest of
the subclass (its non-tensor context) from the skeleton the quantization config rebuilds.

The header's `compression` entry holds the model config, input spec, quantization config and
each entry's encoding; `load_artifact` rebuilds the module structure from that and loads the
tensors into it, so what is evaluated is what was written.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from compression.artifact.config import ExportConfig
from compression.artifact.entries import _encode_entry, flat_state, state_bytes, state_dict_bytes
from compression.artifact.load import (
    itemize,
    load_artifact,
    read_meta,
    rewrite_meta,
    trusted_model_config,
)
from compression.artifact.streams import FORMAT, FORMATS, META_KEY, _code, _write
from compression.core.lazy import nn, torch
from compression.data import DataSpec
from compression.models.config import ModelConfig
from compression.quantization import QuantizationConfig

__all__ = ["FORMAT", "FORMATS", "META_KEY", "ExportConfig", "flat_state", "itemize",
           "load_artifact", "read_meta", "rewrite_meta", "save_artifact", "state_bytes",
           "state_dict_bytes", "trusted_model_config"]


def save_artifact(
    model: nn.Module,
    path: Path,
    *,
    model_cfg: ModelConfig,
    spec: DataSpec,
    quant_cfg: QuantizationConfig,
    transforms: list[dict[str, Any]] | None = None,
    sparse: bool = True,
    export: ExportConfig | None = None,
) -> dict[str, int]:
    """Write `model` to `path`; returns the stored bytes of each state entry (tensor payload,
    before the file header), from which per-layer artifact bytes are summed.

    Layout: a safetensors file with one uint8 tensor `data` = the deflated JSON header, then
    every stream's bytes; the safetensors metadata names the format and the header's length.
    Each entry lists its streams as [suffix, dtype, shape, stored bytes, entropy coded]."""
    cfg = export or ExportConfig()

    def cost(streams: dict[str, torch.Tensor]) -> int:
        return sum(len(_code(t, cfg.codec)[0]) for t in streams.values())

    entries: dict[str, dict] = {}
    chunks: list[bytes] = []
    stored_bytes: dict[str, int] = {}
    for key, value in flat_state(model).items():
        info, streams = _encode_entry(key, value, sparse, cost, cfg)
        table = []
        for name, t in streams.items():
            data, coded = _code(t, cfg.codec)
            chunks.append(data)
            table.append([name[len(key):], str(t.dtype).removeprefix("torch."), list(t.shape),
                          len(data), int(coded)])
        if table:
            info["s"] = table
        entries[key] = info
        stored_bytes[key] = sum(row[3] for row in table)
    meta = {
        "format": FORMAT,
        "model": model_cfg.to_dict(),
        # `sequence` only when set: image and table artifacts keep the header they always had
        "spec": {k: v for k, v in asdict(spec).items() if k != "sequence" or v},
        "quantization": asdict(quant_cfg),
        "transforms": transforms or [],
        "codec": cfg.codec,
        "entries": entries,
    }
    _write(path, meta, b"".join(chunks))
    return stored_bytes
