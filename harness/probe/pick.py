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
