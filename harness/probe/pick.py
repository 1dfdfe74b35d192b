"""Choosing the mask and position conventions by measurement, never by name.

Each (attention_mask, position_ids) pair of harness/core/names.py is written into the draft, the draft is
loaded with ``harness.core.spec.load_spec`` (so it is exactly what a user would get), and the equivalence
oracle runs: a prefix planted with the K/V of P real tokens must reproduce the logits of the model
run on those tokens followed by the input (one sequence and a right-padded batch), relative error
<= 1e-4 in float32. The candidates that do are kept; none doing so is reported, not papered over.
"""
from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from harness.core import names
from harness.core.contract import CacheContract
from harness.core.inputs import make_inputs, random_tokens
from harness.core.prefix_model import PrefixModel
from harness.core.spec import load_spec
from harness.matrix.oracle import full_context, real_prefix_kv, relative_error

TOLERANCE = 1e-4  # the equivalence check's float32 bar


@dataclass
class Trial:
    attention_mask: str
    position_ids: str
    error: float | None  # worst relative error over single and padded batch; None when it raised
    message: str = ""
    control: float | None = None  # error of the input alone (no prefix) against the same full context

    @property
    def passed(self) -> bool:
        # a match counts only when the prefix matters: without it the logits must differ (control)
        return self.error is not None and self.error <= TOLERANCE and (self.control or 0.0) > TOLERANCE


def load_draft(draft: dict, name: str = "probe_draft"):
    """A draft dict -> ModelSpec through the real loader (a temp YAML file)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.yaml"
        path.write_text(yaml.safe_dump(draft, sort_keys=False), encoding="utf-8")
        return load_spec(path)


def measure(model, spec, num_virtual_tokens: int, seed: int = 0) -> tuple[float, float]:
    """(worst relative error of a real-token prefix against the full-context logits, the same for
    the input alone: the control that shows the prefix matters at all)."""
    config = model.config
    contract = CacheContract.for_model(model, spec)
    gen = torch.Generator().manual_seed(seed)
    prefix = random_tokens(spec, config, (num_virtual_tokens,), gen, "cpu")
    one, one_mask = make_inputs(spec, config, 1, 7, gen, "cpu")
    batch, batch_mask = make_inputs(spec, config, 3, 7, gen, "cpu", lengths=[7, 5, 4])
    pm = PrefixModel(model, spec, num_virtual_tokens, fixes=False)
    try:
        with torch.no_grad():
            pm.encoder.plant(real_prefix_kv(contract, model, prefix, one))
            worst, control = 0.0, None
            for ids, mask in ((one, one_mask), (batch, batch_mask)):
                want, _ = full_context(contract, model, prefix, ids, mask)
                got = pm(ids, attention_mask=mask).logits
                worst = max(worst, relative_error(got, want, mask))
                if control is None:
                    alone = model(**contract.model_kwargs(ids, ids, mask, 0)).logits
                    control = relative_error(alone, want, mask)
        return worst, control
    finally:
        pm.detach()


# Tried first where several reproduce the logits: positions passed and counted over real tokens make a
# left-padded row behave as unpadded (batched generation), which the model's own numbering does not.
POSITION_PREFERENCE = ("explicit_offset",)


def pick_conventions(model, draft: dict, num_virtual_tokens: int) -> list[Trial]:
    """Every candidate pair, measured. The draft is not modified."""
    trials = []
    positions = sorted(names.POSITION_CONVENTIONS, key=lambda p: p not in POSITION_PREFERENCE)
    for mask in names.MASK_CONVENTIONS:
        for pos in positions:
            d = copy.deepcopy(draft)
            d["conventions"] = {"attention_mask": mask, "position_ids": pos}
            try:
                spec = load_draft(d)
                err, control = measure(model, spec, num_virtual_tokens)
                note = "" if control > TOLERANCE else " (inconclusive: the logits do not depend on the prefix)"
                trials.append(Trial(mask, pos, err, f"relative error {err:.2e}, without prefix {control:.2e}{note}",
                                    control))
            except Exception as e:  # noqa: BLE001 - a candidate the model rejects is a measured "no"
                first = str(e).splitlines()[0][:200] if str(e) else ""
                trials.append(Trial(mask, pos, None, f"{type(e).__name__}: {first}"))
    return trials


# ----------------------------------------------------------------------------- hybrids
@dataclass
class HybridTrial:
    """A real-token prefix planted on the attention layers alone of a hybrid model (recurrent state
    empty), against the full-context logits; ``whole`` is the same with the prefix run's entire cache
    (recurrent state included), the control that the model continues a cache at all; ``alone`` the
    input without any prefix."""

    attention_only: float | None
    whole: float | None
    alone: float | None
    message: str = ""

    @property
    def passed(self) -> bool:
        return (self.attention_only is not None and self.attention_only <= TOLERANCE
                and (self.alone or 0.0) > TOLERANCE)


def measure_attention_only(model, attention_layers: list, vocab_limit: int, p: int = 3, n: int = 7,
                           seed: int = 0) -> HybridTrial:
    """One sequence: logits of [prefix; input] vs the input behind the prefix's K/V on the attention
    layers only (harness/core/containers/attention_layers.py), positions continuing after the prefix."""
    from harness.core.containers import attention_layers as hybrid
    from harness.core.containers import cache_argument, returned_cache

    gen = torch.Generator().manual_seed(seed)
    prefix = torch.randint(0, vocab_limit, (1, p), generator=gen)  # [1, P]
    ids = torch.randint(0, vocab_limit, (1, n), generator=gen)  # [1, L]
    arg = cache_argument(model)
    ones = torch.ones(1, p + n, dtype=torch.long)
    positions = torch.arange(p, p + n).unsqueeze(0)  # [1, L]: the input continues after the prefix
    errors: dict = {}
    with torch.no_grad():
        want = model(input_ids=torch.cat((prefix, ids), 1), attention_mask=ones, use_cache=True).logits[:, p:]

        def behind(cache):
            return model(input_ids=ids, attention_mask=ones, position_ids=positions, use_cache=True,
                         **{arg: cache}).logits

        def fresh():
            return returned_cache(model(input_ids=prefix, attention_mask=ones[:, :p], use_cache=True))

        for name, run in (("attention_only", lambda: behind(hybrid.pack(
                              [(fresh().layers[i].keys, fresh().layers[i].values) for i in attention_layers],
                              model.config, attention_layers))),
                          ("whole", lambda: behind(fresh())),
                          ("alone", lambda: model(input_ids=ids, attention_mask=ones[:, p:], use_cache=True).logits)):
            try:
                errors[name] = relative_error(run(), want, ones[:, p:])
            except Exception as e:  # noqa: BLE001 - the model refuses such a cache: a measured "no"
                errors[name] = f"{type(e).__name__}: {' '.join(str(e).split())[:160]}"
    floats = {k: v for k, v in errors.items() if isinstance(v, float)}
    msg = ", ".join(f"{k.replace('_', ' ')}: " + (f"relative error {v:.2e}" if isinstance(v, float) else v)
                    for k, v in errors.items())
    return HybridTrial(floats.get("attention_only"), floats.get("whole"), floats.get("alone"), msg)
