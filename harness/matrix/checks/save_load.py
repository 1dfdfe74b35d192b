"""``save_load``: a saved prefix, reloaded onto a fresh copy of the model, gives identical logits,
and those are the logits of the model run on the real tokens the prefix was planted from (so a
save that stores the wrong K/V, or a reload that re-initialises them, fails).

Control: another real-token prefix moves the logits, or "identical after reload" proves nothing."""
import tempfile

import torch

from harness.matrix.bench import Measurement, inconclusive
from harness.matrix.oracle import full_context, real_prefix_kv, relative_error


def run(bench):
    attached = bench.attach()
    contract, base = bench.contract, attached.base
    ids, mask = bench.inputs(batch=2, length=6)
    prefix, other = bench.prefix_tokens(), bench.prefix_tokens()
    with torch.no_grad():
        want, _ = full_context(contract, base, prefix, ids, mask)
        moved, _ = full_context(contract, base, other, ids, mask)
        control = relative_error(moved, want, mask)
        if control <= bench.tolerance:
            return inconclusive(f"another real-token prefix moves the logits by only {control:.2e}: a reload that lost "
                                f"the prefix could not be told apart")
        attached.plant(real_prefix_kv(contract, base, prefix, ids))
        before = attached.logits(ids, mask)
    diff, oracle_err = round_trip(bench, attached, ids, mask, before, want)
    passed = diff == 0.0 and oracle_err <= bench.tolerance
    why = (f"max |logits before - after reload| = {diff:.3g}; reloaded vs the real tokens' full-context logits: "
           f"relative error {oracle_err:.2e} (bar {bench.tolerance:g}); another prefix moves them by {control:.2e}")
    return Measurement(passed, diff, 0.0, why, {"control": control, "oracle_error": oracle_err})


def round_trip(bench, attached, ids, mask, before, want) -> tuple[float, float]:
    """Save the attached prefix, reload it on a fresh copy of the model: (max |logits before - after|,
    relative error of the reloaded logits against ``want``)."""
    with tempfile.TemporaryDirectory() as tmp:
        attached.save(tmp)
        reloaded = attached.reload(bench.fresh_model(), tmp)
    with torch.no_grad():
        after = reloaded.logits(ids, mask)
    diff = float((before - after).abs().max()) if before.shape == after.shape else float("inf")
    err = relative_error(after, want, mask) if after.shape == want.shape else float("inf")
    return diff, err
