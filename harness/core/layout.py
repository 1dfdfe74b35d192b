"""Named-axis KV layouts.

A layout names the four axes of one layer's key (or value) tensor, e.g. ``[b, s, h, d]`` for
Qwen (v1) or ``[s, b, g, d]`` for ChatGLM2. Dim numbers are always derived from the names here,
never hand-typed elsewhere: a spec says *which* axis the model concatenates the past on, and the
code finds *where* it is.

Axis names: ``b`` batch, ``s`` sequence (cache length), ``h`` KV heads (``g`` is accepted as an
alias for ChatGLM's multi-query groups), ``d`` head dim.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

AXES = ("b", "h", "s", "d")
ALIASES = {"g": "h"}  # ChatGLM calls its KV heads "groups"
AXIS_WORDS = {"b": "batch", "h": "KV heads", "s": "sequence", "d": "head dim"}


class LayoutError(ValueError):
    """A layout string or axis name that does not describe a KV tensor."""


@dataclass(frozen=True)
class Layout:
    """The order of the axes of one K (or V) tensor, as the model stores it."""

    axes: tuple[str, ...]  # canonical names, e.g. ("b", "s", "h", "d")
    spelled: tuple[str, ...] = ()  # as written in the spec (keeps "g" for display)

    @classmethod
    def parse(cls, text: str | list | tuple) -> "Layout":
        """Parse ``"[b, s, h, d]"``, ``"b s h d"``, ``"bshd"`` or ``["b", "s", "h", "d"]``."""
        if isinstance(text, str):
            raw = text.strip().strip("[]()")
            parts = [p for p in raw.replace(",", " ").split()]
            if len(parts) == 1 and len(parts[0]) == 4:
                parts = list(parts[0])
        elif isinstance(text, (list, tuple)):
            parts = [str(p).strip() for p in text]
        else:
            raise LayoutError(f"a layout is a list of axis names like [b, h, s, d], got {text!r}")
        spelled = tuple(parts)
        axes = tuple(ALIASES.get(p, p) for p in parts)
        unknown = [p for p in parts if ALIASES.get(p, p) not in AXES]
        if unknown:
            raise LayoutError(
                f"unknown axis {unknown[0]!r} in {text!r}: axes are b (batch), s (sequence), "
                f"h or g (KV heads / groups), d (head dim)"
            )
        if sorted(axes) != sorted(AXES):
            missing = [a for a in AXES if a not in axes]
            dup = sorted({a for a in axes if axes.count(a) > 1})
            what = f"missing {missing}" if missing else f"repeated {dup}"
            raise LayoutError(f"layout {text!r} must name each of b, s, h, d exactly once ({what})")
        return cls(axes=axes, spelled=spelled)

    def dim(self, axis: str) -> int:
        """The dim number of a named axis (``"s"`` -> 1 for ``[b, s, h, d]``)."""
        name = ALIASES.get(axis, axis)
        if name not in self.axes:
            raise LayoutError(f"unknown axis {axis!r}: axes are b, s, h (or g), d")
        return self.axes.index(name)

    def permutation_from(self, source: "Layout") -> tuple[int, ...]:
        """Dims of ``source`` in the order of ``self``: ``x.permute(perm)`` converts."""
        return tuple(source.axes.index(a) for a in self.axes)

    def convert(self, tensor: torch.Tensor, source: "Layout") -> torch.Tensor:
        """Rearrange a tensor stored in ``source`` layout into this layout."""
        if tensor.dim() != 4:
            raise LayoutError(f"a KV tensor has 4 dims, got shape {tuple(tensor.shape)}")
        perm = self.permutation_from(source)
        return tensor if perm == (0, 1, 2, 3) else tensor.permute(perm)

    def shape(self, **sizes: int) -> tuple[int, ...]:
        """The shape of a tensor in this layout given sizes per axis: ``shape(b=2, h=4, s=3, d=16)``."""
        return tuple(sizes[a] for a in self.axes)

    def __str__(self) -> str:  # "[b, s, h, d]"
        return "[" + ", ".join(self.spelled or self.axes) + "]"


# The layout the prefix encoder emits and the classic P-Tuning v2 recipe assumes
# (concatenation on dim 2): (B, H, P, D).
CANONICAL = Layout.parse("[b, h, s, d]")


# ----------------------------------------------------------------------------- canonical K/V
# The prefix's K/V in canonical form, for all layers at once. When K and V share a head dim (every
# model but MLA) it is ONE tensor (layers, 2, [B,] H, P, D), K at index 0 and V at 1 of dim 1: the
# fast common case (views of the encoder's weight, unbound per layer). When they differ (MLA:
# DeepSeek-V2/V3 cache a latent, K and V of different last dims) it is a PAIR (K, V) of tensors
# (layers, [B,] H, P, Dk) and (layers, [B,] H, P, Dv). These helpers let code handle both alike.
def kv_parts(kv) -> tuple:
    """(K, V), each (layers, [B,] H, P, D*), from either form (views, no copy)."""
    return tuple(kv) if isinstance(kv, (tuple, list)) else kv.unbind(1)


def kv_map(fn, *kvs):
    """Apply ``fn`` part by part (K with K, V with V) to K/V of the same form; the result keeps it.
    ``fn`` must keep the 2-axis of the stacked form where it is (dim 1)."""
    if isinstance(kvs[0], (tuple, list)):
        return tuple(fn(*parts) for parts in zip(*kvs))
    return fn(*kvs)


def kv_shapes(kv) -> tuple:
    """The shape(s) of K/V in either form, for comparing two of them."""
    return tuple(tuple(t.shape) for t in kv) if isinstance(kv, (tuple, list)) else tuple(kv.shape)


def kv_with_batch(kv, batch: int):
    """K/V without a batch axis -> with one of size ``batch`` (an expanded view, no copy):
    (layers, 2, H, P, D) -> (layers, 2, B, H, P, D), or each part (layers, H, P, D) -> (layers, B, H, P, D)."""
    if isinstance(kv, (tuple, list)):
        return tuple(t.unsqueeze(1).expand(-1, batch, -1, -1, -1) for t in kv)
    return kv.unsqueeze(2).expand(-1, -1, batch, -1, -1, -1)
