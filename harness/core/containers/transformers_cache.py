"""transformers' own cache object (``DynamicCache``), built the way the installed release allows.

Capability checks, not version numbers: releases before ``DynamicCache`` take legacy tuples;
4.36-4.5x build it with ``from_legacy_cache``; newer ones take the pairs in the constructor.
"""
import inspect

from . import pairs_of


def pack(pairs):
    try:
        from transformers import DynamicCache
    except ImportError:  # before transformers 4.36: legacy tuples are the cache
        return tuple((k, v) for k, v in pairs)
    if "ddp_cache_data" in inspect.signature(DynamicCache.__init__).parameters:
        return DynamicCache(ddp_cache_data=[(k, v) for k, v in pairs])
    return DynamicCache.from_legacy_cache(tuple((k, v) for k, v in pairs))


def unpack(cache):
    return pairs_of(cache)
