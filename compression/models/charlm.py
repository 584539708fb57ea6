"""A tiny decoder-only character (byte) language model, sized for 2 CPU cores.

Bytes 0..255 are the vocabulary. A byte embedding plus learned positions, `depth` pre-norm
blocks with causal attention (the Block, Attention and MLP of models_vit.py, so head/neuron
removal, Wanda, SparseGPT and every quantization mode treat both models alike), a final
LayerNorm and a Linear head giving the next byte's scores at every position.

Layout, chosen so the framework's classifier machinery carries over unchanged: the input is a
float tensor (B, T) of byte values (the data pipeline's inputs are float; 0..255 are exact in
fp32, fp16 and bf16 alike), the output is (B, V, T) - torch's cross-entropy layout (N, C, d1):
`F.cross_entropy(logits, targets)` with targets (B, T), distillation's softmax over dim 1,
top-1 as argmax over dim 1 and perplexity all work as they do for (N, C) logits.
"""

from __future__ import annotations

import torch
from torch import nn

from compression.models.vit import Block


class CharLM(nn.Module):
    """`width` scales the head size and the MLP hidden size (the number of heads stays)."""

    def __init__(self, vocab: int, context: int, width: float = 1.0, depth: int = 4,
                 num_heads: int = 4, head_dim: int = 16, mlp_hidden: int = 256) -> None:
        super().__init__()
        head_dim = max(1, round(head_dim * width))
        hidden = max(1, round(mlp_hidden * width))
        dim = num_heads * head_dim
        self.vocab, self.context = vocab, context
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(1, context, dim) * 0.02)
        self.blocks = nn.Sequential(*(Block(dim, num_heads, head_dim, hidden, causal=True)
                                      for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T) byte values -> (B, V, T)
        t = x.shape[1]
        # clamp: an fp16 / bf16 cast or a stray value must not index outside the table
        tokens = x.round().long().clamp(0, self.vocab - 1)
        h = self.embed(tokens) + self.pos[:, :t]  # (B, T, D)
        h = self.norm(self.blocks(h))
        return self.head(h).transpose(1, 2)  # (B, T, V) -> (B, V, T)
