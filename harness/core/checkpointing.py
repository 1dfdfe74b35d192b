"""Keeping the prefix under gradient checkpointing.

transformers 5 wraps every decoder layer (``GradientCheckpointingLayer``) so that, while checkpointing
in training, the layer gets ``cache=None`` unless the layer class sets ``_can_checkpoint_with_cache``:
the prefix, which lives in that cache, is silently dropped (or the P + L mask no longer fits). The
library refuses the cache because a layer *writes* to it: the backward pass recomputes the layer,
which would append its new K/V a second time.

A prefix cache can be made replay-safe instead: each cache layer forgets what was appended to it
since the prefix before it appends again, so the forward and its recomputation see the same
``[prefix; new]`` K/V. With that, the layers may keep the cache during the prefix model's forward.
Capability checks only (a cache whose layers can ``crop``, layers with the flag): nothing here names
a model, and on code without these hooks nothing changes (the matrix's ``checkpointing`` check then
measures what that code does).
"""
from __future__ import annotations

import contextlib

FLAG = "_can_checkpoint_with_cache"


def checkpointing_active(model) -> bool:
    """Gradient checkpointing is on and the model trains (checkpointing only acts then)."""
    return bool(model.training and getattr(model, "is_gradient_checkpointing", False))


def replay_safe(cache) -> bool:
    """Make ``cache`` (a transformers ``Cache`` holding only the prefix) replay-safe: every layer's
    ``update`` first crops the layer back to the prefix length. Returns False, changing nothing,
    when the cache has no such layers (legacy tuples need nothing: models concatenate them anew)."""
    layers = getattr(cache, "layers", None)
    if not layers or not all(hasattr(layer, "crop") and hasattr(layer, "update") for layer in layers):
        return False
    for layer in layers:
        length = layer.get_seq_length()
        original = layer.update

        def update(key, value, *args, _layer=layer, _length=length, _original=original, **kwargs):
            extra = _layer.get_seq_length() - _length  # what an earlier run of this layer appended
            if extra > 0:
                _layer.crop(-extra)  # a negative count removes that many positions: a recomputation sees P, not P + L
            return _original(key, value, *args, **kwargs)

        layer.update = update
    return True


@contextlib.contextmanager
def cache_kept(model, cache):
    """While the prefix model runs: let checkpointed layers keep ``cache`` when it was made
    replay-safe. The decision to keep it is taken in the forward, so the flag is lifted afterwards
    (the backward recomputation reuses the arguments the forward saw)."""
    flagged = []
    if checkpointing_active(model) and replay_safe(cache):
        for module in model.modules():
            if getattr(module, "gradient_checkpointing", False) and hasattr(type(module), FLAG) \
                    and not getattr(module, FLAG):
                setattr(module, FLAG, True)
                flagged.append(module)
    try:
        yield
    finally:
        for module in flagged:
            with contextlib.suppress(AttributeError):
                delattr(module, FLAG)
