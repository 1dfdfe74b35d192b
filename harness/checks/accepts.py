"""``accepts``: a forward with the prefix runs and returns logits of the shape the model gives
without a prefix, all finite."""
import torch

from ..bench import Measurement


def run(bench):
    attached = bench.attach()
    ids, mask = bench.inputs(batch=2, length=6)
    with torch.no_grad():
        want = tuple(attached.base(**bench.contract.model_kwargs(ids, ids, mask, 0)).logits.shape)
        logits = attached.logits(ids, mask)
    ok_shape = tuple(logits.shape) == want
    finite = bool(torch.isfinite(logits).all())
    return Measurement(
        passed=ok_shape and finite, metric=float(ok_shape and finite), threshold=1.0,
        message=f"logits {tuple(logits.shape)} (want {want}), finite={finite}",
    )
