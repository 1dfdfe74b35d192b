"""The generic P-Tuning v2 prefix encoder.

It knows nothing about any model: it learns P virtual tokens and emits, for every layer, a key
and a value for each of them, in one canonical tensor (layers, 2, B, H, P, D) with H the model's
KV heads (not its query heads: LLaMA, Qwen1.5 and ChatGLM2 group their KV heads). Adapters turn
that tensor into what a particular model's forward takes.
"""
from __future__ import annotations

import torch
from torch import nn


class PrefixEncoder(nn.Module):
    """Embedding of P virtual tokens, optionally reparameterised through an MLP (P-Tuning v2).

    Without projection each virtual token's embedding *is* its K/V for every layer; with
    projection a token embedding of size ``token_dim`` goes through Linear-Tanh-Linear, which the
    paper found stabilises training on some tasks.
    """

    def __init__(self, layers: int, heads: int, head_dim: int, num_virtual_tokens: int,
                 projection_dim: int | None = None, token_dim: int | None = None, dropout: float = 0.0):
        super().__init__()
        self.layers, self.heads, self.head_dim = layers, heads, head_dim
        self.num_virtual_tokens = num_virtual_tokens
        self.width = layers * 2 * heads * head_dim  # every layer's K and V for one position
        self.projection_dim = projection_dim
        if projection_dim:
            token_dim = token_dim or heads * head_dim
            self.embedding = nn.Embedding(num_virtual_tokens, token_dim)
            self.mlp = nn.Sequential(nn.Linear(token_dim, projection_dim), nn.Tanh(), nn.Linear(projection_dim, self.width))
        else:
            self.embedding = nn.Embedding(num_virtual_tokens, self.width)
            self.mlp = None
        self.dropout = nn.Dropout(dropout)
        nn.init.normal_(self.embedding.weight, std=0.02)

    def config(self) -> dict:
        return {"layers": self.layers, "heads": self.heads, "head_dim": self.head_dim,
                "num_virtual_tokens": self.num_virtual_tokens, "projection_dim": self.projection_dim,
                "token_dim": self.embedding.embedding_dim if self.mlp is not None else None}

    def forward(self, batch_size: int) -> torch.Tensor:
        """(layers, 2, B, H, P, D)"""
        flat = self.embedding.weight  # (P, width) or (P, token_dim)
        if self.mlp is not None:
            flat = self.mlp(flat)  # (P, width)
        flat = self.dropout(flat)
        p = self.num_virtual_tokens
        kv = flat.view(p, self.layers, 2, self.heads, self.head_dim)  # (P, layers, 2, H, D)
        kv = kv.permute(1, 2, 3, 0, 4)  # (layers, 2, H, P, D)
        return kv.unsqueeze(2).expand(-1, -1, batch_size, -1, -1, -1)  # (layers, 2, B, H, P, D)

    @torch.no_grad()
    def plant(self, kv: torch.Tensor) -> None:
        """Set the prefix to given K/V, (layers, 2, H, P, D): e.g. those of real tokens, which the
        equivalence and training checks use as a prefix whose right answer is known."""
        if self.mlp is not None:
            raise ValueError("planting K/V needs an encoder without projection (the MLP has no inverse)")
        expected = (self.layers, 2, self.heads, self.num_virtual_tokens, self.head_dim)
        if tuple(kv.shape) != expected:
            raise ValueError(f"planted K/V has shape {tuple(kv.shape)}, this encoder emits {expected}")
        flat = kv.permute(3, 0, 1, 2, 4).reshape(self.num_virtual_tokens, self.width)  # (P, width)
        self.embedding.weight.copy_(flat.to(self.embedding.weight))
