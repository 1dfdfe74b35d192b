"""A model's cache contract, read from its spec: everything an adapter needs to hand a prefix to
that model (layout, container, argument name, mask and position conventions, sizes).

This is the only place where spec data turns into tensors for a forward call, so there are no
model-specific branches anywhere: a new model is a new spec, a new convention a new named module.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import containers
from .conventions import MASKS, POSITIONS
from .layout import CANONICAL, Layout
from .models import KVDims, kv_dims


@dataclass
class CacheContract:
    spec: object
    config: object
    dims: KVDims
    layout: Layout  # the layout the prefix is fed in (the spec's, unless an adapter overrides it)
    container_name: str
    argument: str

    @classmethod
    def for_model(cls, model, spec, layout: Layout | None = None) -> "CacheContract":
        return cls(
            spec=spec, config=model.config, dims=kv_dims(spec, model.config),
            layout=layout or spec.kv.layout, container_name=spec.cache.container,
            argument=containers.cache_argument(model, spec.cache.argument),
        )

    # ------------------------------------------------------------------ canonical <-> model
    def to_model_cache(self, kv):
        """Canonical K/V -> the model's own container in ``self.layout``: (layers, 2, B, H, P, D), or a
        (K, V) pair of (layers, B, H, P, D*) where K and V differ in head dim (MLA)."""
        if isinstance(kv, (tuple, list)):
            k, v = kv
            pairs = [(self.layout.convert(a, CANONICAL), self.layout.convert(b, CANONICAL))
                     for a, b in zip(k.unbind(0), v.unbind(0))]
            return containers.container(self.container_name).pack(pairs)
        # unbind, not kv[i, 0]: each indexing op's backward allocates and fills a zero tensor of
        # kv's full (layers, 2, B, H, P, D) size (2 x layers of them a step); unbind's is one stack.
        pairs = [tuple(self.layout.convert(t, CANONICAL) for t in layer.unbind(0)) for layer in kv.unbind(0)]
        return containers.container(self.container_name).pack(pairs)

    def layer_pairs(self, cache) -> list:
        """The model's returned cache -> per layer (K, V), each (B, H, S, D*) in canonical layout, read
        with the spec's true layout. Layers may hold different lengths (a sliding-window layer keeps
        only its last window of positions)."""
        pairs = containers.container(self.container_name).unpack(cache)
        true = self.spec.kv.layout
        return [(CANONICAL.convert(k, true), CANONICAL.convert(v, true)) for k, v in pairs]

    def from_model_cache(self, cache):
        """The model's returned cache -> (layers, 2, B, H, S, D), or a (K, V) pair of (layers, B, H, S, D*)
        where K and V differ in head dim. Always read with the spec's true layout: this is how the
        oracle takes real tokens' K/V. Every layer must hold the same length (see ``layer_pairs``)."""
        pairs = self.layer_pairs(cache)
        k, v = torch.stack([k for k, _ in pairs]), torch.stack([v for _, v in pairs])
        return (k, v) if self.dims.split else torch.stack((k, v), dim=1)  # a K/V shape mismatch raises here

    def cache_length(self, cache) -> int:
        k, _ = containers.container(self.container_name).unpack(cache)[0]
        return k.shape[self.spec.kv.concat_dim]

    # ------------------------------------------------------------------ a forward call
    def model_kwargs(self, new_ids, full_ids, full_mask, prefix_len: int, cache=None) -> dict:
        """Keyword arguments for the model's forward on ``new_ids`` (the last tokens of ``full_ids``)
        behind ``prefix_len`` prefix positions and an optional cache holding everything before."""
        n_new = new_ids.shape[1]
        conv = self.spec.conventions
        kwargs = {"input_ids": new_ids, "use_cache": True}
        # transformers 4.3x only reads a Cache object's length when use_cache is on, so it always is.
        kwargs["attention_mask"] = MASKS[conv.attention_mask](self.config, prefix_len, full_ids, full_mask, n_new)
        positions = POSITIONS[conv.position_ids](self.config, prefix_len, full_ids, full_mask, n_new)
        if positions is not None:
            kwargs["position_ids"] = positions
        if cache is not None:
            kwargs[self.argument] = cache
        return kwargs
