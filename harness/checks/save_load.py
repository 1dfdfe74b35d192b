"""``save_load``: a saved prefix, reloaded onto a fresh copy of the model, gives identical logits."""
import tempfile

import torch

from ..bench import Measurement
from ..oracle import real_prefix_kv


def run(bench):
    attached = bench.attach()
    ids, mask = bench.inputs(batch=2, length=6)
    with torch.no_grad():
        # A prefix that is not the initial one, so a reload that silently re-initialises fails.
        attached.plant(real_prefix_kv(bench.contract, attached.base, bench.prefix_tokens(), ids))
        before = attached.logits(ids, mask)
    with tempfile.TemporaryDirectory() as tmp:
        attached.save(tmp)
        reloaded = attached.reload(bench.fresh_model(), tmp)
    with torch.no_grad():
        after = reloaded.logits(ids, mask)
        # Control: a different prefix must change the logits, or "identical after reload" proves nothing.
        attached.plant(real_prefix_kv(bench.contract, attached.base, bench.prefix_tokens(), ids))
        control = float((attached.logits(ids, mask) - before).abs().max())
    diff = float((before - after).abs().max()) if before.shape == after.shape else float("inf")
    passed = diff == 0.0 and control > 0.0
    why = f"max |logits before - after reload| = {diff:.3g}; another prefix moves them by {control:.3g}"
    if control == 0.0:
        why += " (the prefix has no effect, so the reload proves nothing)"
    return Measurement(passed, diff, 0.0, why, {"control": control})
