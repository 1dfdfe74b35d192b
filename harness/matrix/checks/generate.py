"""``generate``: greedy generation with a real-token prefix equals greedy generation from the
concatenated real tokens (the oracle recomputes the whole sequence each step), token for token and
step logits within the dtype's bar, for a batch of unpadded rows and a left-padded batch.

Control: on the unpadded batch the real-token prefix changes the no-prefix model's greedy tokens,
so an adapter that drops the prefix would be caught; inputs are redrawn until that holds. Where no
input changes a token (tiny random models whose greedy output echoes the input: Gemma, Cohere,
BLOOM), the prefix moving the step logits by more than the bar is the control instead: a dropped
prefix then fails on the step logits, which are compared whenever the adapter returns them. Neither:
the cell is inconclusive."""
import torch

from harness.matrix.bench import Measurement, inconclusive
from harness.matrix.oracle import (
    compare_greedy,
    greedy_full_recompute,
    real_prefix_kv,
    relative_error,
)

from . import ATTEMPTS

NEW_TOKENS, ROWS, LENGTH, LEFT_LENGTHS = 8, 3, 5, [5, 3, 4]


def draw_legs(bench, base, contract, labels=("batch", "left-padded batch"), rows=ROWS, length=LENGTH,
              left_lengths=LEFT_LENGTHS, new_tokens=NEW_TOKENS):
    """Inputs on which the real-token prefix changes greedy tokens (the control), and the oracle's greedy
    tokens and step logits for an unpadded and a left-padded batch: (prefix, legs, wants, changed, moved),
    ``moved`` being how far the prefix moves the unpadded batch's step logits. Failing a token change on
    every input tried, the first input whose step logits the prefix moves past the bar (changed 0: only
    the step logits can show a dropped prefix); None when neither holds."""
    fallback = None
    for _ in range(ATTEMPTS):
        prefix = bench.prefix_tokens()
        legs = {labels[0]: bench.inputs(batch=rows, length=length),
                labels[1]: bench.inputs(batch=rows, length=length, lengths=left_lengths, side="left")}
        ids, mask = legs[labels[0]]
        with torch.no_grad():
            control, control_logits = greedy_full_recompute(contract, base, prefix[:0], ids, new_tokens, mask)
            wants = {k: greedy_full_recompute(contract, base, prefix, i, new_tokens, m) for k, (i, m) in legs.items()}
        changed = int((control != wants[labels[0]][0]).sum())
        moved = relative_error(control_logits, wants[labels[0]][1])
        if changed:
            return prefix, legs, wants, changed, moved
        if fallback is None and moved > bench.tolerance:
            fallback = prefix, legs, wants, 0, moved
    return fallback


def control_note(changed: int, moved: float, tokens: int) -> str:
    if changed:
        return f"control: the prefix changes {changed} of {tokens} tokens"
    return (f"control: the prefix changes no greedy token on any input tried but moves the step logits by "
            f"{moved:.2e}, past the bar, so a dropped prefix fails on the step logits")


def no_control(rows: int, new_tokens: int, logits_missing: bool = False) -> Measurement:
    if logits_missing:
        return inconclusive(f"the real-token prefix changed none of the {rows}x{new_tokens} greedy tokens on any of "
                            f"{ATTEMPTS} inputs tried, and this adapter's generate() returns no step logits to "
                            f"compare instead")
    return inconclusive(f"the real-token prefix changed none of the {rows}x{new_tokens} greedy tokens, nor moved the "
                        f"step logits past the bar, on any of {ATTEMPTS} inputs tried")


def leg_note(name, got, got_logits, want, want_logits, tol) -> tuple[str, int, float]:
    """One leg's line of the report, its wrong tokens and its step-logits error (compare_greedy)."""
    wrong, err, ties = compare_greedy(got, got_logits, want, want_logits, tol)
    note = f"{name}: {wrong} of {want.numel()} tokens differ"
    if ties:
        note += f" ({ties} row(s) part from the oracle at a near-tie within the bar, compared up to it)"
    if wrong:
        note += f" (got {got.tolist()}, want {want.tolist()})"
    elif got_logits is not None:
        note += f", step logits relative error {err:.2e}"
    return note, wrong, (err if not wrong else 0.0)


def run(bench):
    attached = bench.attach()
    base, contract, tol = attached.base, bench.contract, bench.tolerance
    drawn = draw_legs(bench, base, contract)
    if drawn is None:
        return no_control(ROWS, NEW_TOKENS)
    prefix, legs, wants, changed, moved = drawn
    ids = legs["batch"][0]
    with torch.no_grad():
        attached.plant(real_prefix_kv(contract, base, prefix, ids[:1]))
        report, wrong_total, worst = [], 0, 0.0
        for name, (i, m) in legs.items():
            got, got_logits = attached.generate(i, m, NEW_TOKENS)
            if not changed and got_logits is None:
                return no_control(ROWS, NEW_TOKENS, logits_missing=True)
            note, wrong, err = leg_note(name, got, got_logits, *wants[name], tol)
            wrong_total, worst = wrong_total + wrong, max(worst, err)
            report.append(note)
    passed = wrong_total == 0 and worst <= tol
    if worst > tol:
        report.append(f"step logits off by more than the bar {tol:g}")
    return Measurement(passed, float(wrong_total), 0.0,
                       "; ".join(report) + f" ({control_note(changed, moved, ROWS * NEW_TOKENS)})",
                       {"control_changed": changed, "control_logits_moved": moved, "logits_error": worst})
