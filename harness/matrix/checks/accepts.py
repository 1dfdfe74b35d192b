"""``accepts``: the model takes the prefix as its own K/V. With a prefix planted from P real tokens,
a forward runs, its logits have the model's own shape and are finite, and the cache the model
returns holds exactly the planted K/V in its first P positions (read with the spec's true layout),
followed by the input's. A prefix in the wrong layout, with K and V swapped, in reversed order or
dropped fails here even when the shapes happen to fit.

Control: the planted K differ from the V and from their own reversal, so a swap or a reversal
would show."""
import torch

from harness.core.containers import returned_cache
from harness.matrix.bench import Measurement, inconclusive
from harness.matrix.oracle import real_prefix_kv


def run(bench):
    attached = bench.attach()
    contract, p = bench.contract, bench.num_virtual_tokens
    ids, mask = bench.inputs(batch=2, length=6)
    with torch.no_grad():
        kv = real_prefix_kv(contract, attached.base, bench.prefix_tokens(), ids)  # (layers, 2, H, P, D)
        swap_gap = float((kv[:, 0] - kv[:, 1]).abs().max())
        order_gap = float((kv - kv.flip(-2)).abs().max())
        if swap_gap == 0.0 or order_gap == 0.0:
            return inconclusive(f"the planted K/V cannot reveal a swap ({swap_gap:.3g}) or a reversal ({order_gap:.3g})")
        want_shape = tuple(attached.base(**contract.model_kwargs(ids, ids, mask, 0)).logits.shape)
        attached.plant(kv)
        out = attached.outputs(ids, mask)
    logits = out.logits
    ok_shape = tuple(logits.shape) == want_shape
    finite = bool(torch.isfinite(logits).all())
    held = _held_prefix(contract, returned_cache(out), p)  # (layers, 2, B, H, P, D) or a reason
    if isinstance(held, str):
        cache_err, cache_note = float("inf"), held
    else:
        cache_err = float((held - kv.unsqueeze(2).to(held)).abs().max() / kv.abs().max().clamp_min(1e-12))
        cache_note = f"returned cache vs planted K/V: relative error {cache_err:.2e}"
    tol = bench.tolerance
    passed = ok_shape and finite and cache_err <= tol
    return Measurement(passed, cache_err, tol,
                       f"logits {tuple(logits.shape)} (want {want_shape}), finite={finite}; {cache_note}",
                       {"swap_gap": swap_gap, "order_gap": order_gap})


def _held_prefix(contract, cache, p):
    """The first P positions of the returned cache as (layers, 2, B, H, P, D), or why not."""
    if cache is None:
        return "the model returned no cache"
    try:
        full = contract.from_model_cache(cache)  # (layers, 2, B, H, S, D)
    except Exception as e:  # noqa: BLE001 - a cache in another shape is a finding, not a crash
        return f"the returned cache cannot be read with the spec's layout ({type(e).__name__}: {e})"
    if full.shape[0] != contract.dims.layers or full.shape[-2] < p:
        return f"the returned cache has shape {tuple(full.shape)}: not {contract.dims.layers} layers of >= {p} positions"
    return full[..., :p, :]
