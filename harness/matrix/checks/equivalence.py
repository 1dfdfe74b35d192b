"""``equivalence``: with the prefix set to the K/V of P real tokens, the logits on an input equal
those of the model run on the P tokens followed by the input (relative error <= 1e-4 in float32),
for one sequence, a right-padded batch and a left-padded batch (what batched generation uses).

Control: on every leg the real-token prefix moves the no-prefix logits by more than the bar, so
an adapter that dropped (or garbled) the prefix would miss it; inputs are redrawn until that holds,
else the cell is inconclusive."""
import torch

from harness.matrix.bench import Measurement, inconclusive
from harness.matrix.oracle import (
    full_context,
    no_prefix_logits,
    real_prefix_kv,
    relative_error,
)

from . import ATTEMPTS

LENGTH, LENGTHS = 7, [7, 5, 4]


def run(bench):
    attached = bench.attach()
    base, contract, tol = attached.base, bench.contract, bench.tolerance
    for _ in range(ATTEMPTS):
        prefix = bench.prefix_tokens()
        one = bench.inputs(batch=1, length=LENGTH)
        legs = {"single": one,
                "right-padded batch": bench.inputs(batch=3, length=LENGTH, lengths=LENGTHS),
                "left-padded batch": bench.inputs(batch=3, length=LENGTH, lengths=LENGTHS, side="left")}
        with torch.no_grad():
            wants = {k: full_context(contract, base, prefix, ids, mask)[0] for k, (ids, mask) in legs.items()}
            controls = {k: relative_error(no_prefix_logits(contract, base, ids, mask), wants[k], mask)
                        for k, (ids, mask) in legs.items()}
        if min(controls.values()) > tol:
            break
    else:
        return inconclusive(f"the real-token prefix moves the logits by at most {min(controls.values()):.2e} "
                            f"(bar {tol:g}) on every input tried", {"controls": controls})
    with torch.no_grad():
        attached.plant(real_prefix_kv(contract, base, prefix, one[0]))
        errors = {k: relative_error(attached.logits(ids, mask), wants[k], mask) for k, (ids, mask) in legs.items()}
    worst = max(errors.values())
    detail = ", ".join(f"{k} {v:.2e}" for k, v in errors.items())
    verdict = "matches the full-context logits" if worst <= tol else "differs from the full-context logits"
    control = min(controls.values())
    return Measurement(worst <= tol, worst, tol,
                       f"relative error {detail}: {verdict} (control: no prefix is off by >= {control:.2e})",
                       {"errors": errors, "controls": controls})
