"""The talk's model table, recomputed: parameters, forward GFLOPs, FLOPs per parameter and fp32
megabytes of AlexNet, ResNet-50, BERT-large and GPT-2 XL, side by side with the commonly cited
figures.

Every architecture is written here (no torchvision, no transformers, no weights) and built on
PyTorch's meta device: shapes only, nothing allocated, so GPT-2 XL's 1.6 billion parameters cost
no memory. FLOPs come from torch's FLOP counter (2 per multiply-accumulate; convolutions and
matmuls, including attention's, nothing else), for one 224x224 image or one sequence of the
length given. The cited "GFLOPs" of CNNs (torchvision's model table, and the talk) are
multiply-accumulates, so they sit beside our GMACs = GFLOPs / 2.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def alexnet(num_classes: int = 1000) -> nn.Module:
    """AlexNet as in torchvision (Krizhevsky 2014 'one weird trick' single-tower variant)."""
    conv = [(3, 64, 11, 4, 2), (64, 192, 5, 1, 2), (192, 384, 3, 1, 1), (384, 256, 3, 1, 1),
            (256, 256, 3, 1, 1)]
    layers: list[nn.Module] = []
    for i, (cin, cout, k, s, p) in enumerate(conv):
        layers += [nn.Conv2d(cin, cout, k, s, p), nn.ReLU()]
        if i in (0, 1, 4):
            layers.append(nn.MaxPool2d(3, 2))
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(6), nn.Flatten(),
                         nn.Linear(256 * 36, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(),
                         nn.Linear(4096, num_classes))


class Bottleneck(nn.Module):
    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * 4
        self.body = nn.Sequential(
            nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.short = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.short(x))


def resnet50(num_classes: int = 1000) -> nn.Module:
    """ResNet-50 (He et al. 2016), torchvision's v1.5 (stride on the 3x3 conv)."""
    layers: list[nn.Module] = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                               nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for i, (blocks, width) in enumerate(((3, 64), (4, 128), (6, 256), (3, 512))):
        for b in range(blocks):
            layers.append(Bottleneck(cin, width, 2 if b == 0 and i > 0 else 1))
            cin = width * 4
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(2048, num_classes))


class SelfAttention(nn.Module):
    def __init__(self, d: int, heads: int, causal: bool) -> None:
        super().__init__()
        self.heads, self.causal = heads, causal
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d)
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-1, -2)) / (d // self.heads) ** 0.5  # (B, H, T, T): counted
        if self.causal:
            att = att.masked_fill(torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1),
                                  float("-inf"))
        y = att.softmax(-1) @ v  # (B, H, T, d/H)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class Layer(nn.Module):
    """Post-norm (BERT) or pre-norm (GPT-2) transformer layer with a 4x GELU MLP."""

    def __init__(self, d: int, heads: int, causal: bool) -> None:
        super().__init__()
        self.pre = causal
        self.attn, self.ln1 = SelfAttention(d, heads, causal), nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.ln2 = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre:
            x = x + self.attn(self.ln1(x))
            return x + self.mlp(self.ln2(x))
        x = self.ln1(x + self.attn(x))
        return self.ln2(x + self.mlp(x))


class TransformerLM(nn.Module):
    """BERT-style encoder (token + position + segment embeddings, post-norm, pooler) or GPT-2
    decoder (pre-norm, final LayerNorm, LM head tied to the token embedding)."""

    def __init__(self, vocab: int, ctx: int, d: int, layers: int, heads: int, causal: bool
                 ) -> None:
        super().__init__()
        self.causal = causal
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(ctx, d)
        self.seg = None if causal else nn.Embedding(2, d)
        self.ln = nn.LayerNorm(d)
        self.layers = nn.Sequential(*(Layer(d, heads, causal) for _ in range(layers)))
        self.pooler = None if causal else nn.Linear(d, d)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (B, T) token ids
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.tok(ids) + self.pos(pos)
        if self.seg is not None:  # BERT: embeddings LayerNorm first, pooled [CLS] out
            x = self.layers(self.ln(x + self.seg(torch.zeros_like(ids))))
            return torch.tanh(self.pooler(x[:, 0]))
        return self.ln(self.layers(x)) @ self.tok.weight.T  # (B, T, vocab) logits


@dataclass(frozen=True)
class Entry:
    name: str
    build: Callable[[], nn.Module]
    example: Callable[[], torch.Tensor]  # on the meta device
    input: str
    cited_params_m: float
    cited_g: float | None  # the cited "GFLOPs" (multiply-accumulates for the CNNs)
    source: str


def _image() -> torch.Tensor:
    return torch.empty(1, 3, 224, 224, device="meta")


def _tokens(t: int) -> Callable[[], torch.Tensor]:
    return lambda: torch.zeros(1, t, dtype=torch.long, device="meta")


TABLE = [
    Entry("AlexNet", alexnet, _image, "1x3x224x224", 61.1, 0.71,
          "torchvision model table (61.1M, 0.71 GFLOPS); Krizhevsky 2014"),
    Entry("ResNet-50", resnet50, _image, "1x3x224x224", 25.6, 4.09,
          "torchvision model table (25.6M, 4.09 GFLOPS); He et al. 2016 give 3.8e9 mult-adds"),
    Entry("BERT-large", lambda: TransformerLM(30522, 512, 1024, 24, 16, False), _tokens(128),
          "128 tokens", 340.0, None, "Devlin et al. 2019 (340M parameters)"),
    Entry("GPT-2 XL", lambda: TransformerLM(50257, 1024, 1600, 48, 25, True), _tokens(1024),
          "1024 tokens", 1542.0, None, "Radford et al. 2019 (1542M parameters, '1.5B')"),
]


def count(model: nn.Module, example: torch.Tensor) -> tuple[int, int]:
    """(parameters, forward FLOPs) of a meta-device model (shared weights counted once)."""
    params = sum(p.numel() for p in model.parameters())
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(example)
    return params, int(counter.get_total_flops())


def talk_table() -> pd.DataFrame:
    rows = []
    for e in TABLE:
        with torch.device("meta"):
            model = e.build().eval()
        params, flops = count(model, e.example())
        rows.append({
            "model": e.name, "input": e.input, "params_M": params / 1e6,
            "GFLOPs": flops / 1e9, "GMACs": flops / 2e9, "FLOPs_per_param": flops / params,
            "fp32_MB": params * 4 / 1e6, "cited_params_M": e.cited_params_m,
            "cited_GFLOPs(MACs)": e.cited_g, "source": e.source,
        })
    return pd.DataFrame(rows)
