"""Hybrid models (some layers attention, others recurrent / state-space): transformers' own cache
object with K/V planted on the attention layers only, the recurrent layers' state left empty.

Unlike the other containers, packing needs the model's config (which layer is which kind) and the
indices of the attention layers: ``pack(pairs, config, attention_layers)``. ``pairs`` are one
``(k, v)`` per attention layer, in the model's layout ([b, h, P, d] in transformers);
``unpack(cache)`` gives back the attention layers' pairs only.

Whether a prefix placed this way means anything is a measurement, not an assumption: the recurrent
layers never see the prefix positions, so a real-token prefix reproduces the full-context logits
only where no recurrent layer reads the sequence before the input (harness/probe measures it).
"""
from __future__ import annotations

from . import pairs_of


def attention_indices(cache) -> list[int]:
    """Cache layers that hold attention K/V (a ``keys`` tensor), in a transformers hybrid cache."""
    import torch

    return [i for i, layer in enumerate(getattr(cache, "layers", []))
            if isinstance(getattr(layer, "keys", None), torch.Tensor) and layer.keys.numel() > 0]


def pack(pairs, config=None, attention_layers=None):
    if config is None or attention_layers is None:
        raise TypeError("the attention_layers container needs the model config and the attention layer indices: "
                        "pack(pairs, config, attention_layers)")
    from transformers import DynamicCache

    pairs = list(pairs)
    if len(pairs) != len(attention_layers):
        raise ValueError(f"{len(pairs)} (k, v) pairs for {len(attention_layers)} attention layers {attention_layers}")
    cache = DynamicCache(config=config)  # one layer object per layer type, as the model builds it
    for index, (k, v) in zip(attention_layers, pairs):
        layer = cache.layers[index]
        if not hasattr(layer, "update") or not hasattr(layer, "keys"):
            raise ValueError(f"cache layer {index} ({type(layer).__name__}) holds no attention K/V")
        layer.update(k, v)  # [b, h, P, d] each: the layer starts at P positions
    return cache


def unpack(cache):
    keep = attention_indices(cache)  # recurrent layers have no ``keys``: read the attention ones directly
    return [(cache.layers[i].keys, cache.layers[i].values) for i in keep] if keep else pairs_of(cache)
