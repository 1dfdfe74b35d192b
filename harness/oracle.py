"""What a correct prefix must reproduce: the model run on real tokens, no prefix machinery.

A prefix set to the K/V of P real tokens must give the logits (and greedy tokens) of the model run
on those P tokens followed by the input. The K/V are taken from the model's own cache of that
full run and read with the spec's true layout, so a wrong layout in an adapter cannot hide here.
"""
from __future__ import annotations

import torch

from .containers import returned_cache
from .contract import CacheContract


def random_tokens(spec, config, shape, generator, device) -> torch.Tensor:
    """Random ids below the spec's vocab limit (special tokens sit above it where a model has them)."""
    limit = spec.inputs.vocab_limit.evaluate(config) if spec.inputs.vocab_limit else config.vocab_size
    return torch.randint(0, limit, shape, generator=generator).to(device)


def make_inputs(spec, config, batch, length, generator, device, lengths=None):
    """(ids, mask), right-padded to ``length`` when ``lengths`` are given, with the tokens every row
    must contain (``inputs.insert_tokens``) inserted at ``inputs.insert_at``."""
    ids = random_tokens(spec, config, (batch, length), generator, device)
    inserts = [t.evaluate(config) for t in spec.inputs.insert_tokens]
    lengths = lengths or [length] * batch
    mask = torch.zeros(batch, length, dtype=torch.long, device=device)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
        if inserts:
            at = spec.inputs.insert_at if spec.inputs.insert_at >= 0 else n + spec.inputs.insert_at
            ids[i, at:at + len(inserts)] = torch.tensor(inserts, device=device)
        ids[i, n:] = 0  # padding
    return ids, mask


def full_context(contract: CacheContract, model, prefix_ids, ids, mask):
    """Model output on [prefix tokens; input], and the logits of the input positions (B, L, V)."""
    b, p = ids.shape[0], prefix_ids.shape[-1]
    full = torch.cat((prefix_ids.reshape(1, p).expand(b, -1), ids), dim=1)
    fmask = torch.cat((torch.ones(b, p, dtype=mask.dtype, device=mask.device), mask), dim=1)
    out = model(**contract.model_kwargs(full, full, fmask, 0))
    return out.logits[:, p:], out


def real_prefix_kv(contract: CacheContract, model, prefix_ids, sample_ids) -> torch.Tensor:
    """K/V of the prefix tokens as the model caches them in context, (layers, 2, H, P, D).

    Taken from a full run on [prefix; one input row]: for a causal model that is the prefix alone;
    for ChatGLM-6B, whose context is bidirectional, it includes what the prefix saw of the input's
    context (its specs put [gMASK] <bos> first so that is the same for every row)."""
    p = prefix_ids.shape[-1]
    with torch.no_grad():
        _, out = full_context(contract, model, prefix_ids, sample_ids[:1], torch.ones_like(sample_ids[:1]))
    kv = contract.from_model_cache(returned_cache(out))  # (layers, 2, 1, H, P+L, D)
    return kv[:, :, 0, :, :p].contiguous()


@torch.no_grad()
def greedy_full_recompute(contract: CacheContract, model, prefix_ids, ids, n: int) -> torch.Tensor:
    """Greedy tokens from the model on [prefix; input], recomputing the whole sequence each step
    (no cache at all, so nothing cache-related can be wrong). (B, n)"""
    b, p = ids.shape[0], prefix_ids.shape[-1]
    seq = torch.cat((prefix_ids.reshape(1, p).expand(b, -1), ids), dim=1)
    for _ in range(n):
        out = model(**contract.model_kwargs(seq, seq, torch.ones_like(seq), 0))
        seq = torch.cat((seq, out.logits[:, -1].argmax(-1, keepdim=True)), dim=1)
    return seq[:, -n:]


def relative_error(got, want, mask=None) -> float:
    """max |got - want| / max |want| over the valid positions (mask (B, L) of 1/0)."""
    if mask is not None:
        keep = mask.bool()
        got, want = got[keep], want[keep]
    return float((got - want).abs().max() / want.abs().max().clamp_min(1e-12))
