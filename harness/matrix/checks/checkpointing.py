"""``checkpointing``: with gradient checkpointing on, as a training recipe turns it on
(``model.gradient_checkpointing_enable()``, ``model.config.use_cache = False``, ``model.train()``),
the prefix still reaches the model and its gradient equals the one without checkpointing.

Both runs train the same real-token prefix on the same inputs and targets, in training mode, with
the same random state (dropout draws the same masks; the recomputation replays them): the logits
under checkpointing must equal those without (relative error within the dtype's bar), and so must
the gradient reaching the prefix's K/V, finite and non-zero.

Control: the prefix changes the training logits by more than the bar (the model without it is off),
so an adapter, or a model, that drops the prefix under checkpointing fails; inputs are redrawn until
that holds, else the cell is inconclusive."""
import warnings

import torch

from harness.matrix.bench import Measurement, inconclusive
from harness.matrix.oracle import no_prefix_logits, real_prefix_kv, relative_error

from . import ATTEMPTS

RUN_SEED = 1234  # the random state both training runs start from (dropout masks)


def training_recipe(model) -> None:
    """What fine-tuning scripts do: checkpointing on, the cache off in the config, training mode."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers 5 renamed it, and warns on the old name
        model.gradient_checkpointing_enable()
    if hasattr(model.config, "use_cache"):
        model.config.use_cache = False
    model.train()


def _train_step(bench, kv, ids, mask, targets, checkpointing: bool):
    """Logits (B, L, V) and the gradient on the prefix's K/V (layers, 2, H, P, D) of one step."""
    attached = bench.attach()
    attached.plant(kv)
    if checkpointing:
        training_recipe(attached.base)
    else:
        attached.base.train()
    torch.manual_seed(RUN_SEED)
    logits = attached.logits(ids, mask)
    if not logits.requires_grad:
        return logits.detach(), None
    torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten()).backward()
    return logits.detach(), attached.planted_grad()


def run(bench):
    contract, tol = bench.contract, bench.tolerance
    probe = bench.fresh_model()
    for _ in range(ATTEMPTS):
        ids, mask = bench.inputs(batch=2, length=6)
        prefix = bench.prefix_tokens()
        with torch.no_grad():
            kv = real_prefix_kv(contract, probe, prefix, ids)  # (layers, 2, H, P, D)
            vocab = probe(**contract.model_kwargs(ids, ids, mask, 0)).logits.shape[-1]
        targets = torch.randint(0, vocab, ids.shape, generator=bench.generator).to(ids.device)
        want_logits, want_grad = _train_step(bench, kv, ids, mask, targets, checkpointing=False)
        probe.train()
        torch.manual_seed(RUN_SEED)
        with torch.no_grad():
            dropped = no_prefix_logits(contract, probe, ids, mask)
        probe.eval()
        control = relative_error(dropped, want_logits, mask)
        if control > tol:
            break
    else:
        return inconclusive(f"the prefix moves the training logits by only {control:.2e} on {ATTEMPTS} inputs: "
                            f"a prefix dropped under checkpointing could not be told apart")
    if want_grad is None:
        return Measurement(False, float("inf"), tol, "without checkpointing no gradient reaches the prefix's K/V")
    got_logits, got_grad = _train_step(bench, kv, ids, mask, targets, checkpointing=True)
    problems = []
    logits_err = relative_error(got_logits.to(want_logits), want_logits, mask) \
        if got_logits.shape == want_logits.shape else float("inf")
    if logits_err > tol:
        problems.append("under checkpointing the logits differ from those without (the prefix does not reach the "
                        "model as it did)")
    if got_grad is None or not bool(torch.isfinite(got_grad).all()) or float(got_grad.abs().max()) == 0.0:
        grad_err = float("inf")
        problems.append("under checkpointing no usable gradient reaches the prefix's K/V")
    else:
        grad_err = relative_error(got_grad.to(want_grad), want_grad) if got_grad.shape == want_grad.shape else float("inf")
        if grad_err > tol:
            problems.append("the prefix's gradient under checkpointing differs from that without")
    metric = max(logits_err, grad_err)
    head = (f"checkpointing vs not: logits relative error {logits_err:.2e}, prefix gradient relative error "
            f"{grad_err:.2e} (bar {tol:g}); control: without the prefix the logits are off by {control:.2e}")
    return Measurement(not problems, metric, tol, "; ".join([head] + problems),
                       {"logits_error": logits_err, "gradient_error": grad_err, "control": control})
