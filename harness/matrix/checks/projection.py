"""The ``gradients``, ``train`` and ``save_load`` checks for the ``mlp`` variant, whose prefix goes
through the P-Tuning v2 MLP (embedding -> Linear-Tanh-Linear -> K/V). An MLP has no inverse, so no
real-token K/V can be planted: the references are the model itself fed the K/V the encoder emits.

- gradients: the gradient reaching every encoder parameter equals the reference gradient of K/V fed
  straight into the model's cache, carried back through the encoder by autograd (relative error
  within the dtype's bar), finite and non-zero; none on any base parameter. Control as ``gradients``:
  the reference is non-zero on every layer's K and V slice and not symmetric in K/V.
- train: "recover a planted prefix" from the encoder's random start (teacher: the model on P real
  tokens; loss KL, floor 0, which the MLP can reach: its last linear layer maps the P distinct hidden
  vectors to any P targets when its width is >= P); the held-out loss falls by at least half. Control:
  before the first step the adapter's logits equal the model fed the encoder's K/V; a starting loss
  above float noise.
- save_load: reloaded on a fresh model, logits identical, and equal to the model fed the saved
  encoder's K/V. Control: another random encoder moves them.
"""

import torch

from harness.core.layout import kv_map, kv_parts, kv_with_batch
from harness.matrix.bench import Measurement, inconclusive
from harness.matrix.oracle import full_context, oracle, relative_error, swap_gap

from .gradients import _dead_slices
from .save_load import round_trip
from .train import BATCH, FLOOR, LEARNING_RATE, LENGTH, _kl


def run(check: str, bench):
    return {"gradients": _gradients, "train": _train, "save_load": _save_load}[check](bench)


def _emitted(attached):
    """The encoder's K/V without a batch axis: (layers, 2, H, P, D), or a (K, V) pair (MLA)."""
    kv = attached.pm.encoder(1)
    return tuple(t[:, 0] for t in kv) if isinstance(kv, tuple) else kv[:, :, 0]


@oracle
def _fed(contract, model, kv, ids, mask):
    """The model with K/V (layers, 2, H, P, D) fed straight into its cache: logits (B, L, V)."""
    cache = contract.to_model_cache(kv_with_batch(kv, ids.shape[0]))
    return model(**contract.model_kwargs(ids, ids, mask, kv_parts(kv)[0].shape[-2], cache)).logits


def _gradients(bench):
    attached = bench.attach()
    base, contract, tol = attached.base, bench.contract, bench.tolerance
    ids, mask = bench.inputs(batch=2, length=6)
    with torch.no_grad():
        vocab = base(**contract.model_kwargs(ids, ids, mask, 0)).logits.shape[-1]
    targets = torch.randint(0, vocab, ids.shape, generator=bench.generator).to(ids.device)

    def loss_fn(logits):
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())

    kv = _emitted(attached)
    leaf = kv_map(lambda t: t.detach().clone().requires_grad_(True), kv)
    loss_fn(_fed(contract, base, leaf, ids, mask)).backward()
    want_kv = kv_map(lambda t: t.grad, leaf)
    dead = _dead_slices(want_kv)
    if dead:
        return inconclusive(f"the reference gradient is zero on {', '.join(dead[:4])}: the check cannot see those slices")
    if swap_gap(want_kv) == 0.0:
        return inconclusive("the reference gradient is symmetric in K/V")
    params = attached.prefix_parameters()
    want = dict(zip(params, torch.autograd.grad(kv_parts(kv), list(params.values()), grad_outputs=kv_parts(want_kv))))
    loss_fn(attached.logits(ids, mask)).backward()
    problems, worst = [], 0.0
    for name, p in params.items():
        if p.grad is None or not bool(torch.isfinite(p.grad).all()) or float(p.grad.abs().max()) == 0.0:
            problems.append(f"no usable gradient on {name}")
            worst = float("inf")
            continue
        worst = max(worst, relative_error(p.grad.to(want[name]), want[name]))
    ids_prefix = {id(p) for p in params.values()}
    leaked = [n for n, p in base.named_parameters()
              if id(p) not in ids_prefix and (p.requires_grad or (p.grad is not None and float(p.grad.abs().max()) > 0))]
    if leaked:
        problems.append(f"base parameters with a gradient: {', '.join(leaked[:3])}")
    if worst > tol:
        problems.append("the encoder's gradients differ from the reference carried back through the encoder")
    head = (f"{len(params)} encoder parameter(s) (MLP width {attached.pm.encoder.projection_dim}); gradient vs the "
            f"reference: relative error {worst:.2e}")
    return Measurement(not problems, worst, tol, "; ".join([head] + problems))


def _train(bench):
    attached = bench.attach()
    base, contract = attached.base, bench.contract
    snapshot = {k: v.detach().clone() for k, v in base.state_dict().items()}
    teacher_prefix = bench.prefix_tokens()
    held_ids, held_mask = bench.inputs(BATCH, LENGTH)
    with torch.no_grad():
        held_teacher, _ = full_context(contract, base, teacher_prefix, held_ids, held_mask)
        start_want = _fed(contract, base, _emitted(attached), held_ids, held_mask)
        start_err = relative_error(attached.logits(held_ids, held_mask), start_want, held_mask)

    def held_out() -> float:
        with torch.no_grad():
            return float(_kl(held_teacher, attached.logits(held_ids, held_mask), held_mask))

    optimizer = torch.optim.Adam(list(attached.prefix_parameters().values()), lr=LEARNING_RATE)
    start = held_out()
    if start <= 1e-7:
        return inconclusive(f"the starting held-out KL {start:.3e} is within float noise: the task says nothing here")
    steps = bench.settings.steps
    for _ in range(steps):
        ids, mask = bench.inputs(BATCH, LENGTH)
        with torch.no_grad():
            teacher, _ = full_context(contract, base, teacher_prefix, ids, mask)
        loss = _kl(teacher, attached.logits(ids, mask), mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    end = held_out()
    unchanged = all(torch.equal(v, base.state_dict()[k]) for k, v in snapshot.items())
    starts_right = start_err <= bench.tolerance
    ratio = (end - FLOOR) / (start - FLOOR)
    passed = starts_right and ratio <= 0.5 and unchanged
    why = [f"held-out KL {start:.3e} -> {end:.3e} in {steps} steps from the MLP's random start ({ratio:.3f} of the "
           f"distance to the floor {FLOOR}, bar 0.5)",
           f"start vs the model fed the encoder's K/V: relative error {start_err:.2e}"
           + ("" if starts_right else " (the adapter does not hand the model the K/V its encoder emits)")]
    if not unchanged:
        why.append("the base weights changed")
    return Measurement(passed, ratio, 0.5, "; ".join(why), {"start_error": start_err})


def _save_load(bench):
    attached = bench.attach()
    contract, base, tol = bench.contract, attached.base, bench.tolerance
    ids, mask = bench.inputs(batch=2, length=6)
    other = bench.attach()
    with torch.no_grad():
        for p in other.pm.encoder.parameters():  # another random encoder: the control
            p.copy_(torch.randn(p.shape, generator=bench.generator).to(p) * 0.5)
        for p in attached.pm.encoder.parameters():  # a trained-looking encoder, not the near-zero init
            p.copy_(torch.randn(p.shape, generator=bench.generator).to(p) * 0.5)
        want = _fed(contract, base, _emitted(attached), ids, mask)
        control = relative_error(other.logits(ids, mask), want, mask)
        if control <= tol:
            return inconclusive(f"another encoder moves the logits by only {control:.2e}: a reload that lost the "
                                f"prefix could not be told apart")
        before = attached.logits(ids, mask)
    diff, err = round_trip(bench, attached, ids, mask, before, want)
    passed = diff == 0.0 and err <= tol
    why = (f"max |logits before - after reload| = {diff:.3g}; reloaded vs the model fed the saved encoder's K/V: "
           f"relative error {err:.2e} (bar {tol:g}); another encoder moves them by {control:.2e}")
    return Measurement(passed, diff, 0.0, why, {"control": control, "oracle_error": err})
