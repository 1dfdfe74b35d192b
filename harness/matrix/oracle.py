"""What a correct prefix must reproduce: the model run on real tokens, no prefix machinery.

A prefix set to the K/V of P real tokens must give the logits (and greedy tokens) of the model run
on those P tokens followed by the input. The K/V are taken from the model's own cache of that
full run and read with the spec's true layout, so a wrong layout in an adapter cannot hide here.
"""
from __future__ import annotations

import functools

import torch

from harness.core.containers import returned_cache
from harness.core.contract import CacheContract


class OracleError(RuntimeError):
    """The model itself, with no adapter, failed where the oracle ran it: a problem of the model or its
    spec, never an adapter's failure (a declared expected failure does not cover it)."""


def oracle(fn):
    """Mark a function that runs the bare model: its errors are OracleErrors, naming the function."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except OracleError:
            raise
        except Exception as e:  # noqa: BLE001 - re-raised with its cause
            raise OracleError(f"the model without any adapter failed in {fn.__name__}: {type(e).__name__}: {e}") from e
    return wrapper


@oracle
def full_context(contract: CacheContract, model, prefix_ids, ids, mask):
    """Model output on [prefix tokens; input], and the logits of the input positions (B, L, V)."""
    b, p = ids.shape[0], prefix_ids.shape[-1]
    full = torch.cat((prefix_ids.reshape(1, p).expand(b, -1), ids), dim=1)
    fmask = torch.cat((torch.ones(b, p, dtype=mask.dtype, device=mask.device), mask), dim=1)
    out = model(**contract.model_kwargs(full, full, fmask, 0))
    return out.logits[:, p:], out


@oracle
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


@oracle
@torch.no_grad()
def greedy_full_recompute(contract: CacheContract, model, prefix_ids, ids, n: int, mask=None):
    """Greedy decoding of the model on [prefix; input] (prefix_ids may be empty: the no-prefix
    control), recomputing the whole sequence each step, so nothing cache-related can be wrong.
    Padding (``mask``, left or right) stays where it is. Returns tokens (B, n) and each step's
    last-position logits (B, n, V)."""
    b, p = ids.shape[0], prefix_ids.shape[-1]
    mask = torch.ones_like(ids) if mask is None else mask
    seq = torch.cat((prefix_ids.reshape(1, p).expand(b, -1), ids), dim=1)
    seq_mask = torch.cat((torch.ones(b, p, dtype=mask.dtype, device=mask.device), mask), dim=1)
    steps = []
    for _ in range(n):
        out = model(**contract.model_kwargs(seq, seq, seq_mask, 0))
        last = out.logits[:, -1]  # (B, V)
        steps.append(last)
        nxt = last.argmax(-1, keepdim=True)
        seq = torch.cat((seq, nxt), dim=1)
        seq_mask = torch.cat((seq_mask, torch.ones_like(nxt)), dim=1)
    return seq[:, -n:], torch.stack(steps, dim=1)


@oracle
def no_prefix_logits(contract: CacheContract, model, ids, mask) -> torch.Tensor:
    """The control: the model on the input alone, (B, L, V). A check whose prefix does not move
    these by more than its bar could not tell a correct adapter from one that drops the prefix."""
    return model(**contract.model_kwargs(ids, ids, mask, 0)).logits


def relative_error(got, want, mask=None) -> float:
    """max |got - want| / max |want| over the valid positions (mask (B, L) of 1/0)."""
    if mask is not None:
        keep = mask.bool()
        got, want = got[keep], want[keep]
    return float((got - want).abs().max() / want.abs().max().clamp_min(1e-12))


@oracle
def prefix_gradient(contract: CacheContract, model, kv, ids, mask, loss_fn) -> torch.Tensor:
    """d loss / d K/V for K/V fed straight into the model's cache, (layers, 2, H, P, D): the
    reference of the gradients check (no encoder, no adapter: leaf tensors in the model's own
    layout and container)."""
    leaf = kv.detach().clone().requires_grad_(True)
    b = ids.shape[0]
    cache = contract.to_model_cache(leaf.unsqueeze(2).expand(-1, -1, b, -1, -1, -1))  # (layers, 2, B, H, P, D)
    logits = model(**contract.model_kwargs(ids, ids, mask, kv.shape[-2], cache)).logits
    loss_fn(logits).backward()
    return leaf.grad
