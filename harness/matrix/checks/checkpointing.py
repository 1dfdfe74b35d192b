"""``checkpointing``: with gradient checkpointing on, as a training recipe turns it on
(``model.gradient_checkpointing_enable()``, ``model.config.use_cache = False``, ``model.train()``),
the prefix still reaches the model and its gradient equals the one without checkpointing.

The reference is the model in training mode without checkpointing, fed the same real-token K/V
straight into its cache (no adapter); the adapter trains that prefix under checkpointing. Its logits
must equal the reference's and so must the gradient reaching the prefix's K/V (relative error within
the dtype's bar), finite and non-zero. Dropout is off in both (its masks would differ between runs).

Control: the prefix changes the training logits by more than the bar (the model without it is off),
so an adapter, or a model, that drops the prefix under checkpointing fails; inputs are redrawn until
that holds, else the cell is inconclusive."""
import warnings

import torch

from harness.core.layout import kv_map, kv_parts, kv_with_batch
from harness.matrix.bench import Measurement, inconclusive, not_applicable
from harness.matrix.oracle import (
    no_prefix_logits,
    oracle,
    real_prefix_kv,
    relative_error,
)

from . import ATTEMPTS


def training_recipe(model) -> None:
    """What fine-tuning scripts do: checkpointing on, the cache off in the config, training mode."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers 5 renamed it, and warns on the old name
        model.gradient_checkpointing_enable()
    if hasattr(model.config, "use_cache"):
        model.config.use_cache = False
    model.train()


def _no_dropout(model):
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


@oracle
def _reference(contract, model, kv, ids, mask, loss_fn):
    """Training-mode logits (B, L, V) and d loss / d K/V (layers, 2, H, P, D) of K/V fed straight into
    the model's cache, without checkpointing."""
    leaf = kv_map(lambda t: t.detach().clone().requires_grad_(True), kv)
    cache = contract.to_model_cache(kv_with_batch(leaf, ids.shape[0]))
    logits = model(**contract.model_kwargs(ids, ids, mask, kv_parts(kv)[0].shape[-2], cache)).logits
    loss_fn(logits).backward()
    return logits.detach(), kv_map(lambda t: t.grad, leaf)


def run(bench):
    contract, tol = bench.contract, bench.tolerance
    model = _no_dropout(bench.fresh_model())
    if not getattr(model, "supports_gradient_checkpointing", True):
        # transformers refuses gradient_checkpointing_enable() on such a class: no training run can combine
        # it with a prefix, so there is nothing to measure
        return not_applicable(f"{type(model).__name__} does not support gradient checkpointing "
                              f"(supports_gradient_checkpointing is False): no fine-tuning run can turn it on")
    for _ in range(ATTEMPTS):
        ids, mask = bench.inputs(batch=2, length=6)
        prefix = bench.prefix_tokens()
        with torch.no_grad():
            kv = real_prefix_kv(contract, model, prefix, ids)  # (layers, 2, H, P, D)
            vocab = model(**contract.model_kwargs(ids, ids, mask, 0)).logits.shape[-1]
        targets = torch.randint(0, vocab, ids.shape, generator=bench.generator).to(ids.device)

        def loss_fn(logits):
            return torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())

        model.train()
        want_logits, want_grad = _reference(contract, model, kv, ids, mask, loss_fn)
        with torch.no_grad():
            control = relative_error(no_prefix_logits(contract, model, ids, mask), want_logits, mask)
        model.eval()
        if control > tol:
            break
    else:
        return inconclusive(f"the prefix moves the training logits by only {control:.2e} on {ATTEMPTS} inputs: "
                            f"a prefix dropped under checkpointing could not be told apart")
    attached = bench.attach(_no_dropout(bench.fresh_model()))
    attached.plant(kv)
    training_recipe(attached.base)
    try:
        logits = attached.logits(ids, mask)
        got_grad = None
        if logits.requires_grad:
            loss_fn(logits).backward()
            got_grad = attached.planted_grad()
    except torch.cuda.OutOfMemoryError:
        raise  # the machine, not the model: an error row
    except (RuntimeError, ValueError, TypeError, IndexError) as e:
        # what this check looks for: a model that drops the prefix under checkpointing while the mask still
        # counts it raises here (the spec's declaration may name the text)
        return Measurement(False, float("inf"), tol, f"under checkpointing the model raised {type(e).__name__}: "
                           f"{str(e).splitlines()[0][:300]} (without checkpointing it ran; control: without the "
                           f"prefix the logits are off by {control:.2e})")
    problems = []
    logits = logits.detach()
    logits_err = relative_error(logits.to(want_logits), want_logits, mask) if logits.shape == want_logits.shape \
        else float("inf")
    if logits_err > tol:
        problems.append("under checkpointing the logits differ from those of the real K/V in the cache (the prefix "
                        "does not reach the model as it should)")
    got_parts = kv_parts(got_grad) if got_grad is not None else ()
    if not got_parts or any(not bool(torch.isfinite(g).all()) or float(g.abs().max()) == 0.0 for g in got_parts):
        grad_err = float("inf")
        problems.append("under checkpointing no usable gradient reaches the prefix's K/V")
    else:
        grad_err = max((relative_error(g.to(w), w) if g.shape == w.shape else float("inf"))
                       for g, w in zip(got_parts, kv_parts(want_grad)))
        if grad_err > tol:
            problems.append("the prefix's gradient under checkpointing differs from that of real K/V without it")
    metric = max(logits_err, grad_err)
    head = (f"under checkpointing vs real K/V without: logits relative error {logits_err:.2e}, prefix gradient "
            f"relative error {grad_err:.2e} (bar {tol:g}); control: without the prefix the logits are off by "
            f"{control:.2e}")
    return Measurement(not problems, metric, tol, "; ".join([head] + problems),
                       {"logits_error": logits_err, "gradient_error": grad_err, "control": control})
