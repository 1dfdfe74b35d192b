"""The workbench a check runs on: one cell's model copy, adapter, inputs and tolerances."""
from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field

import torch

from harness.core.contract import CacheContract
from harness.core.inputs import make_inputs, random_tokens

from . import adapters

# Relative tolerance of the equivalence oracle per dtype: float32 is the contract (1e-4);
# half precisions only say "the same computation, rounded".
EQUIVALENCE_TOL = {torch.float32: 1e-4, torch.float64: 1e-6, torch.bfloat16: 5e-2, torch.float16: 1e-2}


@dataclass
class Measurement:
    """What a check measured, and the bar it had to clear. A cell passes only on ``passed``."""

    passed: bool
    metric: float
    threshold: float
    message: str
    details: dict = field(default_factory=dict)
    # The check's control could not show that it can fail here (e.g. the prefix does not change the
    # model's tokens on any input tried): the cell is ``inconclusive``, never a pass.
    inconclusive: bool = False
    # The model itself rules out what the check exercises (e.g. it cannot turn gradient checkpointing on at
    # all): the cell is ``n/a`` with the measured reason, neither a pass nor a failure of prefix tuning.
    not_applicable: bool = False


def inconclusive(message: str, details: dict | None = None) -> Measurement:
    return Measurement(False, float("nan"), float("nan"), f"inconclusive: {message}", details or {}, True)


def not_applicable(message: str, details: dict | None = None) -> Measurement:
    return Measurement(False, float("nan"), float("nan"), message, details or {}, not_applicable=True)


@dataclass
class Settings:
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    steps: int = 60
    seed: int = 0


class Bench:
    def __init__(self, cell, base_model, settings: Settings, attacher=None):
        self.cell, self.settings = cell, settings
        self.spec, self.variant = cell.spec, cell.variant
        self._base = base_model
        self.device, self.dtype = settings.device, settings.dtype
        self.config = base_model.config
        self.contract = CacheContract.for_model(base_model, self.spec)  # the truth, for the oracle
        nvt = self.variant.num_virtual_tokens or self.spec.num_virtual_tokens
        self.num_virtual_tokens = nvt.evaluate(self.config)
        # Inputs depend on the run's seed and the check only, never on the spec's name: copies of a
        # spec under other names get the same verdicts (and the checks' controls make verdicts
        # hold across seeds; tests/test_verdicts_stable.py runs them over ten).
        digest = hashlib.sha256(f"{settings.seed}:{cell.check}".encode()).digest()
        self.generator = torch.Generator().manual_seed(int.from_bytes(digest[:4], "little"))
        self._attacher = attacher or adapters.attach  # tests swap in deliberately broken adapters

    @property
    def tolerance(self) -> float:
        return EQUIVALENCE_TOL.get(self.dtype, 1e-2)

    def fresh_model(self):
        """A private copy of the worker's base model: adapters may wrap, hook or freeze it."""
        return copy.deepcopy(self._base)

    def attach(self, model=None):
        model = model if model is not None else self.fresh_model()
        width = getattr(self.variant, "projection_dim", None)
        if width:  # the generated mlp variant (axes.py): our PrefixModel with the P-Tuning v2 MLP
            from .axes import attach_projected

            return attach_projected(model, self.spec, self.variant, self.num_virtual_tokens,
                                    max(width, self.num_virtual_tokens))
        return self._attacher(self.cell.adapter, model, self.spec, self.variant, self.num_virtual_tokens)

    def inputs(self, batch: int, length: int, lengths=None, side: str = "right"):
        return make_inputs(self.spec, self.config, batch, length, self.generator, self.device, lengths, side)

    def prefix_tokens(self) -> torch.Tensor:
        return random_tokens(self.spec, self.config, (self.num_virtual_tokens,), self.generator, self.device)
