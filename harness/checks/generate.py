"""``generate``: greedy generation with a real-token prefix equals greedy generation from the
concatenated real tokens, token for token (the oracle recomputes the whole sequence each step)."""
import torch

from ..bench import Measurement
from ..oracle import greedy_full_recompute, real_prefix_kv

NEW_TOKENS = 6


def run(bench):
    attached = bench.attach()
    prefix = bench.prefix_tokens()
    ids, _ = bench.inputs(batch=1, length=5)
    with torch.no_grad():
        attached.plant(real_prefix_kv(bench.contract, attached.base, prefix, ids))
        want = greedy_full_recompute(bench.contract, attached.base, prefix, ids, NEW_TOKENS)
        got = attached.generate(ids, NEW_TOKENS)
    wrong = NEW_TOKENS if got.shape != want.shape else int((got != want).sum())
    return Measurement(wrong == 0, float(wrong), 0.0,
                       f"{wrong} of {NEW_TOKENS} tokens differ: got {got.tolist()}, want {want.tolist()}",
                       {"got": got.tolist(), "want": want.tolist()})
