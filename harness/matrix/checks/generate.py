"""``generate``: greedy generation with a real-token prefix equals greedy generation from the
concatenated real tokens (the oracle recomputes the whole sequence each step), token for token and
step logits within the dtype's bar, for a batch of unpadded rows and a left-padded batch.

Control: on the unpadded batch the real-token prefix changes the no-prefix model's greedy tokens,
so an adapter that drops the prefix would be caught; inputs are redrawn until that holds, else the
cell is inconclusive."""
import torch

from harness.matrix.bench import Measurement, inconclusive
from harness.matrix.oracle import compare_greedy, greedy_full_recompute, real_prefix_kv

from . import ATTEMPTS

NEW_TOKENS, ROWS, LENGTH, LEFT_LENGTHS = 8, 3, 5, [5, 3, 4]


def run(bench):
    attached = bench.attach()
    base, contract, tol = attached.base, bench.contract, bench.tolerance
    for _ in range(ATTEMPTS):
        prefix = bench.prefix_tokens()
        legs = {"batch": bench.inputs(batch=ROWS, length=LENGTH),
                "left-padded batch": bench.inputs(batch=ROWS, length=LENGTH, lengths=LEFT_LENGTHS, side="left")}
        ids, mask = legs["batch"]
        with torch.no_grad():
            control, _ = greedy_full_recompute(contract, base, prefix[:0], ids, NEW_TOKENS, mask)
            wants = {k: greedy_full_recompute(contract, base, prefix, i, NEW_TOKENS, m) for k, (i, m) in legs.items()}
        changed = int((control != wants["batch"][0]).sum())
        if changed:
            break
    else:
        return inconclusive(f"the real-token prefix changed none of the {ROWS}x{NEW_TOKENS} greedy tokens on any of "
                            f"{ATTEMPTS} inputs tried")
    with torch.no_grad():
        attached.plant(real_prefix_kv(contract, base, prefix, ids[:1]))
        report, wrong_total, worst = [], 0, 0.0
        for name, (i, m) in legs.items():
            want, want_logits = wants[name]
            got, got_logits = attached.generate(i, m, NEW_TOKENS)
            wrong, err, ties = compare_greedy(got, got_logits, want, want_logits, tol)
            wrong_total += wrong
            note = f"{name}: {wrong} of {want.numel()} tokens differ"
            if ties:
                note += f" ({ties} row(s) part from the oracle at a near-tie within the bar, compared up to it)"
            if wrong:
                note += f" (got {got.tolist()}, want {want.tolist()})"
            elif got_logits is not None:
                worst = max(worst, err)
                note += f", step logits relative error {err:.2e}"
            report.append(note)
    passed = wrong_total == 0 and worst <= tol
    if worst > tol:
        report.append(f"step logits off by more than the bar {tol:g}")
    return Measurement(passed, float(wrong_total), 0.0,
                       "; ".join(report) + f" (control: the prefix changes {changed} of {ROWS * NEW_TOKENS} tokens)",
                       {"control_changed": changed, "logits_error": worst})
