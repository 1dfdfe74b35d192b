"""Cache containers: how per-layer K/V pairs are packed for the model's forward.

One module per container name in ``names.CONTAINERS``; each defines ``pack(pairs)`` (list of
``(k, v)`` in the model's layout -> what the model's forward takes) and ``unpack(cache)`` (what the
model returns -> list of ``(k, v)``). The argument the cache travels in (``past_key_values`` or the
newer ``cache``) is a capability check on the model's forward signature, not a version branch.
"""
from __future__ import annotations

import importlib
import inspect


def container(name: str):
    """The module implementing a container name from a spec."""
    return importlib.import_module(f"{__name__}.{name}")


def cache_argument(model, declared: str = "auto") -> str:
    """``cache`` when the forward takes it (transformers >= 5.x natives), else ``past_key_values``."""
    if declared != "auto":
        return declared
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def returned_cache(outputs):
    """The cache a forward returned, whichever name this library version uses."""
    for key in ("cache", "past_key_values"):
        value = outputs.get(key) if hasattr(outputs, "get") else getattr(outputs, key, None)
        if value is not None:
            return value
    return None


def pairs_of(cache) -> list:
    """Per-layer ``(k, v)`` from any container: DynamicCache of any era, tuples, stacked tensors."""
    layers = getattr(cache, "layers", None)
    if layers is not None and layers and hasattr(layers[0], "keys"):  # transformers >= 4.56
        return [(layer.keys, layer.values) for layer in layers]
    if hasattr(cache, "key_cache"):  # transformers 4.36 - 4.55
        return list(zip(cache.key_cache, cache.value_cache))
    if hasattr(cache, "to_legacy_cache"):
        return [tuple(x) for x in cache.to_legacy_cache()]
    return [(layer[0], layer[1]) for layer in cache]
