"""Greedy tokens against the oracle: a row may part at a near-tie within the dtype's bar, never elsewhere."""
import torch

from harness.matrix.oracle import compare_greedy


def _logits(choices, runner_up_gap):
    """(1, n, V) step logits whose argmax is ``choices`` and whose second best trails by ``runner_up_gap``."""
    n, v = len(choices), 8
    out = torch.zeros(1, n, v)
    for j, c in enumerate(choices):
        out[0, j, c] = 10.0
        out[0, j, (c + 1) % v] = 10.0 - runner_up_gap
    return out


def test_a_flip_at_a_near_tie_is_not_a_wrong_token():
    want = torch.tensor([[1, 2, 3, 4]])
    want_logits = _logits([1, 2, 3, 4], runner_up_gap=0.1)  # 1 % of the scale
    got = torch.tensor([[1, 3, 5, 5]])  # parts at step 1, choosing the runner-up, then goes its own way
    wrong, err, ties = compare_greedy(got, want_logits.clone(), want, want_logits, tol=5e-2)
    assert (wrong, ties) == (0, 1) and err == 0.0


def test_a_flip_with_a_clear_margin_is_wrong():
    """Control: the same flip where the oracle's choice leads by far more than the bar."""
    want = torch.tensor([[1, 2, 3, 4]])
    want_logits = _logits([1, 2, 3, 4], runner_up_gap=5.0)  # 50 % of the scale
    got = torch.tensor([[1, 3, 5, 5]])
    wrong, _, ties = compare_greedy(got, want_logits.clone(), want, want_logits, tol=5e-2)
    assert ties == 0 and wrong == 3


def test_float32_bar_sees_a_small_margin():
    """The same 1 % near-tie is a wrong token under float32's bar (1e-4)."""
    want = torch.tensor([[1, 2, 3, 4]])
    want_logits = _logits([1, 2, 3, 4], runner_up_gap=0.1)
    wrong, _, ties = compare_greedy(torch.tensor([[1, 3, 5, 5]]), want_logits.clone(), want, want_logits, tol=1e-4)
    assert ties == 0 and wrong == 3


def test_step_logits_before_the_tie_are_still_compared():
    want = torch.tensor([[1, 2, 3, 4]])
    want_logits = _logits([1, 2, 3, 4], runner_up_gap=0.1)
    got_logits = want_logits.clone()
    got_logits[0, 0, 7] = 3.0  # step 0, before the tie, is off
    _, err, ties = compare_greedy(torch.tensor([[1, 3, 5, 5]]), got_logits, want, want_logits, tol=5e-2)
    assert ties == 1 and err > 0.2
