"""The `export` config section: how the artifact's streams are stored (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass

from compression.artifact.coding import positions
from compression.artifact.coding.codecs import CODECS, zstd_available
from compression.core import validation as v
from compression.core.errors import ConfigError


@dataclass
class ExportConfig:
    """How the artifact's streams are stored (`export.*`)."""

    codec: str = "none"  # entropy codec on every value / position stream: none|huffman|zstd|lzma
    positions: str = "auto"  # auto: the smallest coding per tensor; or force one (experiments)

    def __post_init__(self) -> None:
        v.one_of("export.codec", self.codec, sorted(CODECS))
        v.one_of("export.positions", self.positions, ["auto", *positions.KINDS])
        if self.codec == "zstd" and not zstd_available():
            raise ConfigError("export.codec=zstd needs the zstandard package "
                              "(pip install -r requirements.txt)")
