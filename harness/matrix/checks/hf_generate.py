"""``hf_generate``: ``PrefixModel.generate()`` as Hugging Face users call it: greedy and beam-search
tokens behind a real-token prefix equal those of the model run on the concatenated real tokens (the
oracle; greedy step logits within the dtype's bar too), on a batch and a left-padded batch (greedy) and on the batch (beams, 3 of them). The row's
message says which path ran: the model's own ``generate()`` with the prefix handed over, or the
harness's own loop where the model's generate() cannot take a prefix (beams are then not available
and only greedy is measured). PEFT's rows use PEFT's ``generate()``.

Control: the real-token prefix changes the no-prefix model's greedy tokens (inputs are redrawn until
it does), or, where it changes no token on any input, moves the greedy step logits past the bar (then
only the greedy step logits can show a lost prefix); neither: inconclusive. See generate.py."""
import copy

import torch

from harness.matrix.bench import Measurement
from harness.matrix.oracle import (
    oracle,
    real_prefix_kv,
)

from .generate import control_note, draw_legs, leg_note, no_control

NEW_TOKENS, ROWS, LENGTH, LEFT_LENGTHS, BEAMS = 6, 3, 5, [5, 3, 4], 3
# Beam search keeps whichever hypotheses lead at each step; where two nearly tie mid-search (float noise
# between the cached and the recomputed run decides), it may end on another beam of almost the same score.
# Measured on llama seed 5: a beam 0.35 % below the oracle's. A row whose beam scores within 1 % of the
# oracle's (under the concatenated-tokens model) is such a tie; the greedy legs carry the strict bar.
BEAM_BAR = 1e-2


def _exact_n(model, **settings):
    """A generation config that picks exactly n tokens: no end-of-sequence stop."""
    config = copy.deepcopy(model.generation_config)
    config.eos_token_id, config.min_new_tokens, config.do_sample = None, None, False
    config.pad_token_id = config.pad_token_id if config.pad_token_id is not None else 0
    for k, v in settings.items():
        setattr(config, k, v)
    return config


@oracle
@torch.no_grad()
def beam_full_context(model, prefix_ids, ids, n: int):
    """The model's own beam search on [prefix; input] (no past, nothing prefix-related): (B, n)."""
    b, p = ids.shape[0], prefix_ids.shape[-1]
    full = torch.cat((prefix_ids.reshape(1, p).expand(b, -1), ids), dim=1)
    out = model.generate(input_ids=full, attention_mask=torch.ones_like(full), max_new_tokens=n,
                         generation_config=_exact_n(model, num_beams=BEAMS))
    return out[:, full.shape[1]:]


@oracle
def continuation_logprob(model, prefix_ids, ids, new) -> torch.Tensor:
    """Log-probability (B,) of the continuations ``new`` (B, n) under the model run on [prefix; input; new]."""
    b, p = ids.shape[0], prefix_ids.shape[-1]
    full = torch.cat((prefix_ids.reshape(1, p).expand(b, -1), ids, new), dim=1)
    logp = model(input_ids=full, attention_mask=torch.ones_like(full)).logits.float().log_softmax(-1)
    steps = logp[:, -new.shape[1] - 1:-1]  # (B, n, V): the positions that predict each new token
    return steps.gather(-1, new.unsqueeze(-1)).squeeze(-1).sum(-1)


def _beam_wrong(model, prefix, ids, got, want, tol) -> tuple[int, int]:
    """(tokens that differ, rows that are ties). Beam search may settle on another hypothesis where two
    score alike: a row whose beam scores, under the concatenated-tokens model, within the bar of the
    oracle's beam is a tie, not a wrong row (a prefix that is lost scores its beam far lower)."""
    if got.shape != want.shape:
        return want.numel(), 0
    rows = [r for r in range(want.shape[0]) if bool((got[r] != want[r]).any())]
    if not rows:
        return 0, 0
    with torch.no_grad():
        lp_got, lp_want = continuation_logprob(model, prefix, ids, got), continuation_logprob(model, prefix, ids, want)
    wrong, ties = 0, 0
    for r in rows:
        if float(lp_got[r]) >= float(lp_want[r]) - tol * max(abs(float(lp_want[r])), 1.0):
            ties += 1
        else:
            wrong += int((got[r] != want[r]).sum())
    return wrong, ties


def _generate(attached, ids, mask, **settings):
    """New tokens (B, n) from the adapter's user-facing generate(), each step's logits (B, n, V) for
    greedy decoding (else None), and the path that ran."""
    pm = getattr(attached, "pm", None)
    greedy = settings.get("num_beams", 1) == 1
    if pm is not None:
        out = pm.generate(ids, attention_mask=mask, max_new_tokens=NEW_TOKENS, output_logits=greedy, **settings)
        out, logits = out if greedy else (out, None)
        return out[:, ids.shape[1]:], logits, pm.last_generate_path[0], pm.last_generate_path[1]
    model = attached.model  # PEFT
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=NEW_TOKENS, return_dict_in_generate=True,
                         output_logits=greedy, generation_config=_exact_n(attached.base, **settings))
    logits = torch.stack(out.logits, dim=1) if greedy and getattr(out, "logits", None) else None
    return out.sequences[:, ids.shape[1]:], logits, "PEFT generate()", "PEFT's own"


def run(bench):
    attached = bench.attach()
    base, contract = attached.base, bench.contract
    drawn = draw_legs(bench, base, contract, ("greedy batch", "greedy left-padded batch"), ROWS, LENGTH,
                      LEFT_LENGTHS, NEW_TOKENS)
    if drawn is None:
        return no_control(ROWS, NEW_TOKENS)
    prefix, legs, wants, changed, moved = drawn
    ids, mask = legs["greedy batch"]
    with torch.no_grad():
        attached.plant(real_prefix_kv(contract, base, prefix, ids[:1]))
    report, wrong_total, paths, worst = [], 0, [], 0.0
    for name, (i, m) in legs.items():
        got, got_logits, path, why = _generate(attached, i, m, do_sample=False)
        if not changed and got_logits is None:
            return no_control(ROWS, NEW_TOKENS, logits_missing=True)
        paths.append((path, why))
        note, wrong, err = leg_note(name, got, got_logits, *wants[name], bench.tolerance)
        wrong_total, worst = wrong_total + wrong, max(worst, err)
        report.append(note)
    if worst > bench.tolerance:
        report.append(f"step logits off by more than the bar {bench.tolerance:g}")
    if paths[0][0] == "harness loop":
        report.append("beam search: not available (the harness loop runs greedy and sampling only)")
    else:
        want = beam_full_context(base, prefix, ids, NEW_TOKENS)
        got, _, path, why = _generate(attached, ids, mask, num_beams=BEAMS)
        paths.append((path, why))
        wrong, ties = _beam_wrong(base, prefix, ids, got, want, max(bench.tolerance, BEAM_BAR))
        wrong_total += wrong
        report.append(f"beam search ({BEAMS} beams): {wrong} of {want.numel()} tokens differ"
                      + (f"; {ties} row(s) found another beam scoring as high, within the bar" if ties else "")
                      + (f" (got {got.tolist()}, want {want.tolist()})" if wrong else ""))
    used = sorted({p for p, _ in paths})
    report.append(f"path: {', '.join(used)} ({paths[0][1]})")
    return Measurement(wrong_total == 0 and worst <= bench.tolerance, float(wrong_total), 0.0,
                       "; ".join(report) + f" ({control_note(changed, moved, ROWS * NEW_TOKENS)})",
                       {"control_changed": changed, "control_logits_moved": moved, "path": ", ".join(used)})
