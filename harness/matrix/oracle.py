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
from harness.core.layout import kv_map, kv_parts, kv_with_batch


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
def real_prefix_kv(contract: CacheContract, model, prefix_ids, sample_ids):
    """K/V of the prefix tokens as the model caches them in context: (layers, 2, H, P, D), or a
    (K (layers, H, P, Dk), V (layers, H, P, Dv)) pair where K and V differ in head dim (MLA).

    Taken from a full run on [prefix; one input row]: for a causal model that is the prefix alone;
    for ChatGLM-6B, whose context is bidirectional, it includes what the prefix saw of the input's
    context (its specs put [gMASK] <bos> first so that is the same for every row). Where a layer's
    cache kept fewer positions than it was fed (a sliding window shorter than prefix + input: its
    first positions are gone), the prefix is run again through the model's own cache a few tokens at
    a time, each chunk's K/V read as the newest positions (the K/V of a causal model's first P tokens
    depend on those P tokens alone)."""
    p = prefix_ids.shape[-1]
    row = sample_ids[:1]
    with torch.no_grad():
        _, out = full_context(contract, model, prefix_ids, row, torch.ones_like(row))
        pairs = contract.layer_pairs(returned_cache(out))  # per layer (K, V), each (1, H, S, D*)
        kept = min(min(k.shape[-2], v.shape[-2]) for k, v in pairs)
        if kept < p + row.shape[1]:  # a window dropped the oldest positions
            pairs = _prefix_in_chunks(contract, model, prefix_ids.reshape(1, p), max(1, min(kept, p)))
        k = torch.stack([k[0, :, :p] for k, _ in pairs])  # (layers, H, P, Dk)
        v = torch.stack([v[0, :, :p] for _, v in pairs])  # (layers, H, P, Dv)
    return ((k.contiguous(), v.contiguous()) if contract.dims.split
            else torch.stack((k, v), dim=1).contiguous())  # (layers, 2, H, P, D)


def _prefix_in_chunks(contract: CacheContract, model, ids, chunk: int) -> list:
    """Per layer (K, V) of the tokens ``ids`` (1, P), each (1, H, P, D*): fed ``chunk`` tokens a
    forward through the cache the model returns, reading each chunk's K/V as the last ``chunk``
    positions every layer holds after it (a window keeps at least that many)."""
    cache, chunks = None, []
    for start in range(0, ids.shape[1], chunk):
        seen = ids[:, :start + chunk]
        new = seen[:, start:]
        out = model(**contract.model_kwargs(new, seen, torch.ones_like(seen), 0, cache))
        cache = returned_cache(out)
        n = new.shape[1]
        chunks.append([(k[..., -n:, :].clone(), v[..., -n:, :].clone()) for k, v in contract.layer_pairs(cache)])
    return [(torch.cat([c[i][0] for c in chunks], dim=-2), torch.cat([c[i][1] for c in chunks], dim=-2))
            for i in range(len(chunks[0]))]


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
    """max |got - want| / max |want| over the valid positions (mask (B, L) of 1/0). K/V in either
    canonical form (harness/core/layout.py) are compared part by part, over one shared scale."""
    if isinstance(want, (tuple, list)):
        num = max(float((g - w).abs().max()) for g, w in zip(got, want))
        den = max(float(w.abs().max()) for w in want)
        return num / max(den, 1e-12)
    if mask is not None:
        keep = mask.bool()
        got, want = got[keep], want[keep]
    return float((got - want).abs().max() / want.abs().max().clamp_min(1e-12))


@oracle
def prefix_gradient(contract: CacheContract, model, kv, ids, mask, loss_fn):
    """d loss / d K/V for K/V fed straight into the model's cache, in the form of ``kv``
    ((layers, 2, H, P, D) or a (K, V) pair): the reference of the gradients check (no encoder, no
    adapter: leaf tensors in the model's own layout and container)."""
    leaf = kv_map(lambda t: t.detach().clone().requires_grad_(True), kv)
    p = kv_parts(kv)[0].shape[-2]
    cache = contract.to_model_cache(kv_with_batch(leaf, ids.shape[0]))  # batch expanded: a view
    logits = model(**contract.model_kwargs(ids, ids, mask, p, cache)).logits
    loss_fn(logits).backward()
    return kv_map(lambda t: t.grad, leaf)


def swap_gap(kv) -> float:
    """max |K - V| of canonical K/V: 0 means a K/V swap could not show. Infinite where K and V differ
    in shape (MLA): a swap cannot pass unnoticed there, the model refuses the shapes."""
    k, v = kv_parts(kv)
    return float((k - v).abs().max()) if k.shape == v.shape else float("inf")


def order_gap(kv) -> float:
    """max |K/V - K/V with the positions (dim -2) reversed|, over K and V: 0 means a reversal could not show."""
    return max(float((t - t.flip(-2)).abs().max()) for t in kv_parts(kv))


def compare_greedy(got, got_logits, want, want_logits, tol: float) -> tuple[int, float, int]:
    """Greedy tokens (B, n) and step logits (B, n, V) of an adapter against the oracle's.

    Returns (tokens that differ, step-logits relative error over the steps compared, rows cut at a tie).
    A row may part from the oracle at a near-tie: where the token it chose scores, in the oracle's own
    logits, within the dtype's bar of the oracle's choice (in bfloat16 two runs of the same model differ
    by that much), the row is compared up to and including that step and not after (the two sequences
    then condition on different tokens). Any other differing token counts as wrong."""
    if got.shape != want.shape:
        return want.numel(), float("inf"), 0
    wrong, ties = 0, 0
    compared = torch.ones(want.shape, dtype=torch.bool, device=want.device)  # (B, n) steps whose logits are compared
    for r in range(want.shape[0]):
        differ = (got[r] != want[r]).nonzero()
        if not len(differ):
            continue
        j = int(differ[0])
        step = want_logits[r, j].float()  # (V,)
        margin = float(step.max() - step[got[r, j]])
        if margin <= tol * max(float(step.abs().max()), 1e-6):
            ties += 1
            compared[r, j + 1:] = False
        else:
            wrong += int(len(differ))
    if got_logits is None:
        return wrong, 0.0, ties
    err = relative_error(got_logits[compared].to(want_logits), want_logits[compared])
    return wrong, err, ties
