"""``gradients``: one backward pass through the adapter gives the prefix the gradient it would get
as real K/V fed straight into the model's cache (relative error within the dtype's bar), with a
finite non-zero gradient on every layer's K and V slice and on every prefix parameter, and none on
any base parameter.

Control: the reference gradient is non-zero on every layer's K and V slice (else a prefix that
some layers ignore could not be told apart), and it differs from itself with K and V swapped or
the positions reversed."""
import torch

from harness.core.layout import kv_map, kv_parts, kv_shapes
from harness.matrix.bench import Measurement, inconclusive
from harness.matrix.oracle import (
    order_gap,
    prefix_gradient,
    real_prefix_kv,
    relative_error,
    swap_gap,
)


def run(bench):
    attached = bench.attach()
    base, contract = attached.base, bench.contract
    ids, mask = bench.inputs(batch=2, length=6)
    with torch.no_grad():
        kv = real_prefix_kv(contract, base, bench.prefix_tokens(), ids)  # (layers, 2, H, P, D) or a (K, V) pair
        vocab = base(**contract.model_kwargs(ids, ids, mask, 0)).logits.shape[-1]
    targets = torch.randint(0, vocab, ids.shape, generator=bench.generator).to(ids.device)

    def loss_fn(logits):
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())

    want = prefix_gradient(contract, base, kv, ids, mask, loss_fn)
    dead = _dead_slices(want)
    if dead:
        return inconclusive(f"the reference gradient is zero on {', '.join(dead[:4])}: the check cannot see those slices")
    if order_gap(want) == 0.0 or swap_gap(want) == 0.0:
        return inconclusive("the reference gradient is symmetric in K/V or in positions")

    attached.plant(kv)
    logits = attached.logits(ids, mask)
    if not logits.requires_grad:  # nothing the adapter holds reaches the output
        return Measurement(False, float("inf"), bench.tolerance,
                           "the logits do not depend on any trainable prefix parameter: no gradient can reach the prefix")
    loss_fn(logits).backward()
    prefix = attached.prefix_parameters()
    prefix_ids = {id(p) for p in prefix.values()}
    got = attached.planted_grad()
    problems = []
    if not prefix:
        problems.append("no trainable prefix parameters at all")
    missing = [n for n, p in prefix.items()
               if p.grad is None or not bool(torch.isfinite(p.grad).all()) or float(p.grad.abs().max()) == 0.0]
    if missing:
        problems.append(f"prefix parameters without a usable gradient: {', '.join(missing[:3])}")
    # A base parameter leaks when it would train (requires_grad) or got a gradient anyway.
    leaked = [n for n, p in base.named_parameters()
              if id(p) not in prefix_ids and (p.requires_grad or (p.grad is not None and float(p.grad.abs().max()) > 0))]
    if leaked:
        problems.append(f"base parameters with a gradient: {', '.join(leaked[:3])}")
    if got is None:
        err = float("inf")
        problems.append("no gradient reached the prefix's K/V")
    else:
        got = kv_map(lambda g, w: g.to(w), got, want) if kv_shapes(got) == kv_shapes(want) else got
        dead_got = _dead_slices(got)
        if dead_got:
            problems.append(f"no usable gradient on {', '.join(dead_got[:4])}")
        err = relative_error(got, want) if kv_shapes(got) == kv_shapes(want) else float("inf")
    tol = bench.tolerance
    if err > tol:
        problems.append("the prefix's gradient differs from that of real K/V in the cache")
    passed = not problems
    head = f"{len(prefix)} prefix parameter(s); gradient vs real K/V in the cache: relative error {err:.2e}"
    return Measurement(passed, err, tol, "; ".join([head] + problems))


def _dead_slices(grad) -> list[str]:
    """Names of the layer K/V slices of a gradient ((layers, 2, H, P, D) or a (K, V) pair) that are
    zero or not finite."""
    out = []
    k, v = kv_parts(grad)
    for layer in range(k.shape[0]):
        for name, part in (("K", k), ("V", v)):
            g = part[layer]
            if not bool(torch.isfinite(g).all()) or float(g.abs().max()) == 0.0:
                out.append(f"layer {layer} {name}")
    return out
