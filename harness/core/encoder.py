"""The generic P-Tuning v2 prefix encoder.

It knows nothing about any model: it learns P virtual tokens and emits, for every layer, a key
and a value for each of them, in canonical form (harness/core/layout.py): one tensor
(layers, 2, B, H, P, D) with H the model's KV heads (not its query heads: LLaMA, Qwen1.5 and
ChatGLM2 group their KV heads), or, when K and V differ in head dim (MLA), a pair
(K (layers, B, H, P, Dk), V (layers, B, H, P, Dv)). Adapters turn that into what a particular
model's forward takes.
"""
from __future__ import annotations

import torch
from torch import nn

from .layout import kv_parts


class PrefixEncoder(nn.Module):
    """Embedding of P virtual tokens, optionally reparameterised through an MLP (P-Tuning v2).

    Without projection each virtual token's embedding *is* its K/V for every layer; with
    projection a token embedding of size ``token_dim`` goes through Linear-Tanh-Linear, which the
    paper found stabilises training on some tasks.

    One position's row of ``width`` numbers is, layer after layer, that layer's K (H x Dk) then its
    V (H x Dv): with Dk == Dv that is (layers, 2, H, D), so prefixes saved before V had a head dim of
    its own load unchanged.
    """

    def __init__(self, layers: int, heads: int, head_dim: int, num_virtual_tokens: int,
                 projection_dim: int | None = None, token_dim: int | None = None, dropout: float = 0.0,
                 v_head_dim: int | None = None):
        super().__init__()
        self.layers, self.heads, self.head_dim = layers, heads, head_dim
        self.v_head_dim = head_dim if v_head_dim is None else v_head_dim
        self.num_virtual_tokens = num_virtual_tokens
        self.width = layers * heads * (self.head_dim + self.v_head_dim)  # every layer's K and V for one position
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

    @property
    def split(self) -> bool:
        """K and V differ in head dim: the output is a (K, V) pair, not one stacked tensor."""
        return self.v_head_dim != self.head_dim

    def config(self) -> dict:
        return {"layers": self.layers, "heads": self.heads, "head_dim": self.head_dim,
                "v_head_dim": self.v_head_dim,
                "num_virtual_tokens": self.num_virtual_tokens, "projection_dim": self.projection_dim,
                "token_dim": self.embedding.embedding_dim if self.mlp is not None else None}

    def as_kv(self, flat: torch.Tensor):
        """(P, width) rows -> canonical K/V without a batch axis, as views: (layers, 2, H, P, D), or
        (K (layers, H, P, Dk), V (layers, H, P, Dv)). Also reads a gradient of the embedding as K/V."""
        p, layers, h = flat.shape[0], self.layers, self.heads
        if not self.split:
            kv = flat.view(p, layers, 2, h, self.head_dim)  # (P, layers, 2, H, D)
            return kv.permute(1, 2, 3, 0, 4)  # (layers, 2, H, P, D)
        per_layer = flat.view(p, layers, h * (self.head_dim + self.v_head_dim))  # (P, layers, H*Dk + H*Dv)
        k, v = per_layer.split((h * self.head_dim, h * self.v_head_dim), dim=-1)
        return (k.unflatten(-1, (h, self.head_dim)).permute(1, 2, 0, 3),  # (layers, H, P, Dk)
                v.unflatten(-1, (h, self.v_head_dim)).permute(1, 2, 0, 3))  # (layers, H, P, Dv)

    def forward(self, batch_size: int):
        """(layers, 2, B, H, P, D), or (K (layers, B, H, P, Dk), V (layers, B, H, P, Dv)) when split."""
        flat = self.embedding.weight  # (P, width) or (P, token_dim)
        if self.mlp is not None:
            flat = self.mlp(flat)  # (P, width)
        flat = self.dropout(flat)
        kv = self.as_kv(flat)
        if not self.split:  # the common case: views only, the batch never materialised
            return kv.unsqueeze(2).expand(-1, -1, batch_size, -1, -1, -1)  # (layers, 2, B, H, P, D)
        return tuple(t.unsqueeze(1).expand(-1, batch_size, -1, -1, -1) for t in kv)  # (layers, B, H, P, D*)

    def expected_shapes(self) -> tuple:
        """What ``plant`` takes: (layers, 2, H, P, D), or the shapes of the (K, V) pair."""
        p = self.num_virtual_tokens
        if not self.split:
            return (self.layers, 2, self.heads, p, self.head_dim)
        return ((self.layers, self.heads, p, self.head_dim), (self.layers, self.heads, p, self.v_head_dim))

    @torch.no_grad()
    def plant(self, kv) -> None:
        """Set the prefix to given K/V, (layers, 2, H, P, D) or a (K, V) pair of (layers, H, P, D*):
        e.g. those of real tokens, which the equivalence and training checks use as a prefix whose
        right answer is known."""
        if self.mlp is not None:
            raise ValueError("planting K/V needs an encoder without projection (the MLP has no inverse)")
        expected = self.expected_shapes()
        got = tuple(tuple(t.shape) for t in kv) if isinstance(kv, (tuple, list)) else tuple(kv.shape)
        if got != expected:
            raise ValueError(f"planted K/V has shape {got}, this encoder emits {expected}")
        p = self.num_virtual_tokens
        k, v = kv_parts(kv)  # (layers, H, P, D*)
        rows = torch.cat((k.permute(2, 0, 1, 3).reshape(p, self.layers, -1),
                          v.permute(2, 0, 1, 3).reshape(p, self.layers, -1)), dim=-1)  # (P, layers, H*Dk + H*Dv)
        self.embedding.weight.copy_(rows.reshape(p, self.width).to(self.embedding.weight))
