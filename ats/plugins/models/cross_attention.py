"""The cross-attention pooling of IPS (Bergner et al., ICLR 2023, Sec. 3.2).

A learned query attends to the M patch embeddings (multi-head scaled
dot-product attention), followed by a residual MLP, as in the IPS
"transformer" aggregator; the same module's attention logits rank the
patches during the scan (:meth:`CrossAttentionPool.score`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["CrossAttentionPool"]


class CrossAttentionPool(nn.Module):
    """(B, N, d_model) embeddings -> (B, d_model): one learned query's
    multi-head cross-attention over the N, then a residual MLP.

    Args:
        d_model: embedding size D; heads: H; d_head: query/key/value size per head;
        d_inner: hidden size of the MLP; dropout / attn_dropout: rates.
    """

    def __init__(self, d_model: int, *, heads: int = 8, d_head: int = 16, d_inner: int = 512,
                 dropout: float = 0.1, attn_dropout: float = 0.1) -> None:
        super().__init__()
        self.heads, self.d_head = heads, d_head
        self.query = nn.Parameter(torch.randn(1, 1, d_model) * d_model ** -0.5)
        self.q = nn.Linear(d_model, heads * d_head, bias=False)
        self.k = nn.Linear(d_model, heads * d_head, bias=False)
        self.v = nn.Linear(d_model, heads * d_head, bias=False)
        self.out = nn.Linear(heads * d_head, d_model)
        self.attn_dropout = nn.Dropout(attn_dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_inner), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(d_inner, d_model), nn.Dropout(dropout))
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def logits(self, x: Tensor) -> Tensor:
        """(B, N, D) -> (B, H, N): the query's scaled dot products with each key."""
        b, n, _ = x.shape
        q = self.q(self.query).view(1, self.heads, 1, self.d_head)
        k = self.k(x).view(b, n, self.heads, self.d_head).transpose(1, 2)  # (B, H, N, dh)
        return (q * k).sum(-1) / math.sqrt(self.d_head)

    def score(self, x: Tensor) -> Tensor:
        """(B, N, D) -> (B, N): a patch's score, the mean over heads of its
        logit. It depends on that patch alone (IPS averages the heads' softmax
        weights, which depend on the other patches scored beside it), so the
        iterative selection equals the top M of one pass over all patches."""
        return self.logits(x).mean(1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, N, D) -> pooled (B, D) and the attention (B, N), mean over heads."""
        b, n, _ = x.shape
        attention = self.logits(x).softmax(-1)  # (B, H, N)
        v = self.v(x).view(b, n, self.heads, self.d_head).transpose(1, 2)  # (B, H, N, dh)
        mixed = (self.attn_dropout(attention).unsqueeze(-1) * v).sum(2)  # (B, H, dh)
        pooled = self.norm1(self.query[:, 0] + self.dropout(self.out(mixed.reshape(b, -1))))
        return self.norm2(pooled + self.mlp(pooled)), attention.mean(1)
