"""``accepts``: the model takes the prefix as its own K/V. With a prefix planted from P real tokens,
a forward runs, its logits have the model's own shape and are finite, and the cache the model
returns holds exactly the planted K/V in its first P positions (read with the spec's true layout),
followed by the input's. A prefix in the wrong layout, with K and V swapped, in reversed order or
dropped fails here even when the shapes happen to fit.

Control: the planted K differ from the V and from their own reversal, so a swap or a reversal
would show."""
import torch

from harness.core.containers import returned_cache
from harness.core.layout import kv_parts
from harness.matrix.bench import Measurement, inconclusive
from harness.matrix.oracle import order_gap, real_prefix_kv, relative_error, swap_gap


def run(bench):
    attached = bench.attach()
    contract, p = bench.contract, bench.num_virtual_tokens
    ids, mask = bench.inputs(batch=2, length=6)
    with torch.no_grad():
        kv = real_prefix_kv(contract, attached.base, bench.prefix_tokens(), ids)  # (layers, 2, H, P, D) or (K, V)
        swap, order = swap_gap(kv), order_gap(kv)
        if swap == 0.0 or order == 0.0:
            return inconclusive(f"the planted K/V cannot reveal a swap ({swap:.3g}) or a reversal ({order:.3g})")
        want_shape = tuple(attached.base(**contract.model_kwargs(ids, ids, mask, 0)).logits.shape)
        attached.plant(kv)
        out = attached.outputs(ids, mask)
    logits = out.logits
    ok_shape = tuple(logits.shape) == want_shape
    finite = bool(torch.isfinite(logits).all())
    held = _held_prefix(contract, returned_cache(out), p)  # per layer (K, V), each (B, H, P, D*), or a reason
    if isinstance(held, str):
        cache_err, cache_note = float("inf"), held
    else:
        # every row of the batch holds the planted K/V: compare row by row, K with K and V with V
        planted = kv_parts(kv)  # (layers, H, P, D*)
        same = all(len({tuple(pair[j].shape) for pair in held}) == 1 for j in (0, 1))
        got = [torch.stack([pair[j] for pair in held]) if same else None for j in (0, 1)]  # (layers, B, H, P, D*)
        fits = same and all(g.shape[0] == w.shape[0] and g.shape[2:] == w.shape[1:] for g, w in zip(got, planted))
        cache_err = (relative_error(got, [w.unsqueeze(1).to(g).expand_as(g) for g, w in zip(got, planted)])
                     if fits else float("inf"))  # one scale over K and V
        cache_note = f"returned cache vs planted K/V: relative error {cache_err:.2e}"
    tol = bench.tolerance
    passed = ok_shape and finite and cache_err <= tol
    return Measurement(passed, cache_err, tol,
                       f"logits {tuple(logits.shape)} (want {want_shape}), finite={finite}; {cache_note}",
                       {"swap_gap": swap, "order_gap": order})


def _held_prefix(contract, cache, p):
    """The first P positions of every layer of the returned cache, as per-layer (K, V) pairs of
    (B, H, P, D*) read with the spec's true layout, or why they cannot be read."""
    if cache is None:
        return "the model returned no cache"
    try:
        pairs = contract.layer_pairs(cache)  # per layer (K, V), each (B, H, S, D*)
    except Exception as e:  # noqa: BLE001 - a cache in another shape is a finding, not a crash
        return f"the returned cache cannot be read with the spec's layout ({type(e).__name__}: {e})"
    short = [i for i, (k, v) in enumerate(pairs) if min(k.shape[-2], v.shape[-2]) < p]
    if len(pairs) != contract.dims.layers or short:
        return (f"the returned cache has {len(pairs)} layers holding {[tuple(k.shape) for k, _ in pairs]}: not "
                f"{contract.dims.layers} layers of >= {p} positions")
    return [(k[..., :p, :], v[..., :p, :]) for k, v in pairs]
