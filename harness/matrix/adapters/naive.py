"""The ``naive`` adapter: the classic P-Tuning v2 recipe.

Every model gets ``[b, h, s, d]`` K/V, as meant for concatenation on dim 2, in whatever container
the model takes, with the right masks, positions and KV-head count. Only the layout is "wrong",
so this adapter answers one question: does this model accept the textbook layout? On Qwen (v1)
and ChatGLM it does not: an error, or silently wrong numbers when shapes happen to coincide.
"""
from harness.core.layout import CANONICAL

from . import ours


def attach(model, spec, variant, num_virtual_tokens):
    return ours.attach(model, spec, variant, num_virtual_tokens, layout=CANONICAL)
