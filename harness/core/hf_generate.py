"""Handing the prefix to the model's own ``generate()`` (sampling, beams, stopping, streamers).

transformers' ``generate()`` reads a given past as the K/V of the first tokens of ``input_ids``: it
feeds only the tokens after the past's length. So the prompt goes in behind P placeholder tokens
(never embedded: the model is fed from position P on) with their mask columns set to 1, and the
placeholders are cut off the result. Positions then follow from the mask as generate() computes
them, i.e. the real tokens continue after the prefix.

Whether that is right for a model is measured, not assumed: some models' generation code reads any
past as "decoding" and keeps only the last prompt token (Qwen v1, ChatGLM-6B), others build
positions or masks their own way, or takes the prompt step right and loses the prefix in the
decoding steps. Before handing over, the first two steps of generate() are compared with the
harness's own loop on the same inputs (relative error within the dtype's bar); when they disagree,
or generate() refuses the arguments, the caller falls back to the harness's own loop.
"""
from __future__ import annotations

import copy

import torch

# Bars of "the same computation" per dtype (as the matrix's equivalence bars: float32 is the contract).
SAME_TOL = {torch.float32: 1e-4, torch.float64: 1e-6, torch.bfloat16: 5e-2, torch.float16: 1e-2}
MODEL = "model generate()"
LOOP = "harness loop"


class _SkipPlaceholders:
    """A streamer that never sees the placeholders: generate() first puts the whole prompt."""

    def __init__(self, streamer, count: int):
        self.streamer, self.count, self.first = streamer, count, True

    def put(self, value):
        if self.first:
            self.first = False
            value = value[..., self.count:]  # (B, P + L) -> (B, L)
        self.streamer.put(value)

    def end(self):
        self.streamer.end()


def _criteria_without_placeholders(criteria, count: int):
    """The caller's stopping criteria, each shown the sequences without the P placeholders, so a length or
    content rule sees what the caller's prompt and the new tokens are."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _Cut(StoppingCriteria):
        def __init__(self, inner):
            self.inner = inner

        def __call__(self, input_ids, scores, **kwargs):
            return self.inner(input_ids[:, count:], scores, **kwargs)  # (B, P + L + t) -> (B, L + t)

    return StoppingCriteriaList([_Cut(c) for c in criteria])


def _placeholders(pm, input_ids, attention_mask):
    """[placeholders; prompt] (B, P + L) and its mask, prefix columns visible."""
    b, p = input_ids.shape[0], pm.num_virtual_tokens
    ids = torch.cat((torch.zeros(b, p, dtype=input_ids.dtype, device=input_ids.device), input_ids), dim=1)
    mask = torch.cat((torch.ones(b, p, dtype=attention_mask.dtype, device=attention_mask.device), attention_mask), dim=1)
    return ids, mask


def _config(pm, kwargs: dict):
    """The generation config (the caller's, else the model's) with the generation keywords folded in,
    and the keywords left for the model. Harness defaults: exactly max_new_tokens unless an
    eos_token_id is given (as the harness loop), and a pad id so finished rows can be padded."""
    config = copy.deepcopy(kwargs.pop("generation_config", None) or pm.base.generation_config)
    config.eos_token_id = kwargs.pop("eos_token_id", None)
    if config.eos_token_id is None:
        config.min_new_tokens = None
    if config.pad_token_id is None:
        config.pad_token_id = config.eos_token_id if config.eos_token_id is not None else 0
    rest = config.update(**kwargs)  # what is not a generation setting: streamer, stopping_criteria, ...
    return config, rest


def model_generate(pm, input_ids, attention_mask, **kwargs):
    """The model's generate() behind the prefix: its output with the placeholders cut off
    (``sequences`` (B, L + n), and ``scores`` / ``logits`` when asked for)."""
    config, rest = _config(pm, dict(kwargs))
    ids, mask = _placeholders(pm, input_ids, attention_mask)
    if rest.get("streamer") is not None:
        rest["streamer"] = _SkipPlaceholders(rest["streamer"], pm.num_virtual_tokens)
    if rest.get("stopping_criteria"):
        rest["stopping_criteria"] = _criteria_without_placeholders(rest["stopping_criteria"], pm.num_virtual_tokens)
    # generate() repeats each prompt row for beams / returned sequences but not a cache it is given:
    # the prefix is the same for every row, so it is built for the expanded batch.
    beams = max(1, config.num_beams or 1)
    expand = beams if beams > 1 else max(1, config.num_return_sequences or 1)
    rest[pm.contract.argument] = pm.prefix_cache(input_ids.shape[0] * expand)
    # generate() fills a given config's unset values (eos_token_id None: "no stop") from the model's own
    # config, so the model carries ours for the call.
    own, pm.base.generation_config = pm.base.generation_config, config
    try:
        out = pm.base.generate(input_ids=ids, attention_mask=mask, generation_config=config, **rest)
    finally:
        pm.base.generation_config = own
    if torch.is_tensor(out):
        return out[:, pm.num_virtual_tokens:]
    out.sequences = out.sequences[:, pm.num_virtual_tokens:]
    return out


PROBE_STEPS = 2  # the prompt step and one decoding step: a model may take the first right and lose the prefix after


def returns_raw_logits() -> bool:
    """Whether this transformers' generate() can return each step's raw logits (``output_logits``, added in
    4.38); before it, only ``scores``, which the logits processors have already changed."""
    from transformers import GenerationConfig

    return hasattr(GenerationConfig(), "output_logits")


@torch.no_grad()
def model_generate_agrees(pm, input_ids, attention_mask) -> tuple[bool, str]:
    """Whether the first steps of the model's generate() behind the prefix give the logits of the
    harness's own loop (the prompt step and a decoding step); with the reason when not."""
    ref = next(pm.base.parameters())
    tol = SAME_TOL.get(ref.dtype, 1e-2)
    _, want = pm._loop(input_ids, attention_mask, PROBE_STEPS, None, True, "probing")  # (B, n, V)
    # Without output_logits the processed scores stand in: a processor that changes them (a repetition
    # penalty in the model's generation config) can only make the steps disagree, never agree wrongly.
    steps = {"output_logits": True} if returns_raw_logits() else {"output_scores": True}
    try:
        out = model_generate(pm, input_ids, attention_mask, max_new_tokens=PROBE_STEPS, do_sample=False, num_beams=1,
                             return_dict_in_generate=True, **steps)
    except (TypeError, ValueError, RuntimeError, IndexError, AttributeError, KeyError) as e:
        return False, f"the model's generate() refused the prefix ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
    logits = getattr(out, "logits", None) or getattr(out, "scores", None)
    if not logits or len(logits) != PROBE_STEPS:
        return False, "the model's generate() returns no step logits to compare"
    got = torch.stack(logits, dim=1).float()
    if got.shape != want.shape:
        return False, f"the model's generate() steps have shape {tuple(got.shape)}, the loop's {tuple(want.shape)}"
    want = want.float()
    err = float((got - want).abs().max() / want.abs().max().clamp_min(1e-12))
    if err > tol:
        return False, (f"the model's generate() does not read the prefix as the forward does (first {PROBE_STEPS} steps: "
                       f"relative error {err:.2e} > {tol:g}; e.g. it keeps only the last prompt token behind a past)")
    return True, f"its first {PROBE_STEPS} steps equal the harness loop's (relative error {err:.2e})"
