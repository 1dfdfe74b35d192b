"""``equivalence``: with the prefix set to the K/V of P real tokens, the logits on an input equal
those of the model run on the P tokens followed by the input, for one sequence and for a
right-padded batch (relative error <= 1e-4 in float32)."""
import torch

from ..bench import Measurement
from ..oracle import full_context, real_prefix_kv, relative_error


def run(bench):
    attached = bench.attach()
    prefix = bench.prefix_tokens()
    one, one_mask = bench.inputs(batch=1, length=7)
    batch, batch_mask = bench.inputs(batch=3, length=7, lengths=[7, 5, 4])
    with torch.no_grad():
        attached.plant(real_prefix_kv(bench.contract, attached.base, prefix, one))
        errors = {}
        for name, ids, mask in (("single", one, one_mask), ("padded batch", batch, batch_mask)):
            want, _ = full_context(bench.contract, attached.base, prefix, ids, mask)
            got = attached.logits(ids, mask)
            errors[name] = relative_error(got, want, mask)
    worst = max(errors.values())
    tol = bench.tolerance
    detail = ", ".join(f"{k} {v:.2e}" for k, v in errors.items())
    verdict = "matches the full-context logits" if worst <= tol else "differs from the full-context logits"
    return Measurement(worst <= tol, worst, tol, f"relative error {detail}: {verdict}", {"errors": errors})
