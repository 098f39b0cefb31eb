"""A MiniLM-shaped transformer encoder built in code (6 layers, hidden 384, 12 heads, FFN 1536).

Attention is written out (matmul, softmax) the way BERT implementations do, so
ONNX Runtime's transformer optimizer can recognise it. Weights are random with
BERT's initialisation (normal, std 0.02; LayerNorm 1/0): no download.
Input: token embeddings (B, S, 384); output: hidden states (B, S, 384).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

HIDDEN, HEADS, FFN, LAYERS, SEQ = 384, 12, 1536, 6, 128


class SelfAttention(nn.Module):
    def __init__(self, hidden: int = HIDDEN, heads: int = HEADS) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, hidden // heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        # (B, S, hidden) -> (B, H, S, D)
        return x.view(x.size()[:-1] + (self.heads, self.head_dim)).permute(0, 2, 1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)  # (B, H, S, S)
        context = torch.matmul(F.softmax(scores, dim=-1), v)  # (B, H, S, D)
        context = context.permute(0, 2, 1, 3).contiguous()
        return context.view(context.size()[:-2] + (self.heads * self.head_dim,))


class EncoderLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attention = SelfAttention()
        self.attention_out = nn.Linear(HIDDEN, HIDDEN)
        self.norm1 = nn.LayerNorm(HIDDEN, eps=1e-12)
        self.intermediate = nn.Linear(HIDDEN, FFN)
        self.output = nn.Linear(FFN, HIDDEN)
        self.norm2 = nn.LayerNorm(HIDDEN, eps=1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(self.attention_out(self.attention(x)) + x)
        return self.norm2(self.output(F.gelu(self.intermediate(x))) + x)


class Encoder(nn.Module):
    def __init__(self, layers: int = LAYERS) -> None:
        super().__init__()
        self.layers = nn.ModuleList([EncoderLayer() for _ in range(layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def bert_initialised_encoder(seed: int = 0) -> Encoder:
    """An ``Encoder`` with BERT's initialisation, deterministic for ``seed``."""
    model = Encoder()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear):
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * 0.02)
                module.bias.zero_()
    return model.eval()


def outlier_initialised_encoder(seed: int = 0, n_outliers: int = 6, gain: float = 12.0) -> Encoder:
    """Harder to quantize, like trained encoders: weights scaled 1/sqrt(fan_in), small biases,
    and a few LayerNorm "outlier channels" (large gain and shift in the same dimensions of every
    LayerNorm), the activation outliers that make real BERT/MiniLM models hard for per-tensor int8.

    With BERT's initialisation the residual stream dominates and every int8 variant scores a
    cosine above 0.9999, which says nothing; this initialisation separates them.
    """
    model = Encoder()
    gen = torch.Generator().manual_seed(seed)
    dims = torch.randperm(HIDDEN, generator=gen)[:n_outliers]
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear):
                fan_in = module.weight.shape[1]
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) / math.sqrt(fan_in))
                module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.02)
            elif isinstance(module, nn.LayerNorm):
                weight = 1.0 + 0.1 * torch.randn(HIDDEN, generator=gen)
                bias = 0.05 * torch.randn(HIDDEN, generator=gen)
                weight[dims] = gain * (1 + 0.2 * torch.rand(n_outliers, generator=gen))
                bias[dims] = 2.0 * torch.randn(n_outliers, generator=gen)
                module.weight.copy_(weight)
                module.bias.copy_(bias)
    return model.eval()


def embeddings(n: int, seed: int) -> torch.Tensor:
    """Stand-in token embeddings: LayerNorm-scaled Gaussian vectors, (n, SEQ, HIDDEN)."""
    gen = torch.Generator().manual_seed(seed)
    return F.layer_norm(torch.randn(n, SEQ, HIDDEN, generator=gen), (HIDDEN,))
