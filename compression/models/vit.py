"""A tiny Vision Transformer (Dosovitskiy et al. 2021) sized for 2 CPU cores.

The image is cut into a 4x4 grid of patches (7x7 pixels at 28x28, 2x2 at 8x8 digits; images
whose side is not a multiple of 4 are zero-padded up to one), each patch projected by a Linear,
a learned class token and learned positions added, then `depth` pre-norm blocks
(x + attn(norm(x)), x + mlp(norm(x))) and a Linear head on the normed class token.

Attention is written with four plain nn.Linear layers (q, k, v, out) rather than
nn.MultiheadAttention, whose forward reads `out_proj.weight` directly: pruning masks, sparse
kernels and quantized Linear swaps would be bypassed. Every weight matrix of the model is
therefore an nn.Linear that the rest of the framework can prune, quantize or remove heads from
(see compression/pruning/heads.py: both blocks name their removable units, models/units.py).
"""

from __future__ import annotations

import math

from compression.core.lazy import F, nn, torch
from compression.models.units import UnitBlock

GRID = 4  # patches per side


class Attention(nn.Module, UnitBlock):
    """Multi-head self-attention; head h owns rows h*d .. h*d+d-1 of q, k, v and the same
    columns of `out` (d = head_dim), so removing a head slices those four matrices. `causal`:
    position t attends to positions <= t only (the character LM of models_charlm.py)."""

    unit_producers, unit_consumer = ("q", "k", "v"), "out"

    def __init__(self, dim: int, num_heads: int, head_dim: int, causal: bool = False) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.causal = num_heads, head_dim, causal
        inner = num_heads * head_dim
        self.q, self.k, self.v = (nn.Linear(dim, inner) for _ in range(3))
        self.out = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        b, t, _ = x.shape
        # (B, T, H*d) -> (B, H, T, d); -1 so a model with removed heads needs no other change
        q, k, v = (p(x).view(b, t, -1, self.head_dim).transpose(1, 2)
                   for p in (self.q, self.k, self.v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)  # (B, H, T, d)
        return self.out(y.transpose(1, 2).reshape(b, t, -1))

    @property
    def unit_size(self) -> int:
        return self.head_dim

    def units_kept(self, count: int) -> None:
        self.num_heads = count


class MLP(nn.Module, UnitBlock):
    """fc1 -> GELU -> fc2; hidden neuron j is row j of fc1 and column j of fc2."""

    unit_producers, unit_consumer = ("fc1",), "fc2"

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, head_dim: int, hidden: int,
                 causal: bool = False) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, num_heads, head_dim, causal)
        self.norm2, self.mlp = nn.LayerNorm(dim), MLP(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """`width` scales the head size and the MLP hidden size (the number of heads stays)."""

    def __init__(self, in_channels: int, image_size: int, num_classes: int, width: float = 1.0,
                 depth: int = 4, num_heads: int = 4, head_dim: int = 16, mlp_hidden: int = 128
                 ) -> None:
        super().__init__()
        head_dim = max(1, round(head_dim * width))
        hidden = max(1, round(mlp_hidden * width))
        dim = num_heads * head_dim
        self.patch = math.ceil(image_size / GRID)
        self.pad = self.patch * GRID - image_size
        self.embed = nn.Linear(in_channels * self.patch**2, dim)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, GRID * GRID + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*(Block(dim, num_heads, head_dim, hidden)
                                      for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, GRID*GRID, C*p*p), patches in row-major order."""
        if self.pad:
            x = F.pad(x, (0, self.pad, 0, self.pad))
        b, c, p = x.shape[0], x.shape[1], self.patch
        x = x.reshape(b, c, GRID, p, GRID, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(b, GRID * GRID, c * p * p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, classes)
        tokens = self.embed(self.patches(x))  # (B, N, D)
        cls = self.cls.expand(tokens.shape[0], -1, -1)
        x = torch.cat([cls, tokens], dim=1) + self.pos  # (B, N+1, D)
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])
