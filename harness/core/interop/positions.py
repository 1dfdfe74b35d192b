"""A position-less prefix: the new tokens are numbered as if there were no prefix.

The harness's default gives the prefix positions 0..P-1 and the real tokens P.., exactly what the
model computes for P real tokens followed by the input (the matrix's equivalence check holds it to
that). ChatGLM's own P-Tuning v2 (``pre_seq_len``) does otherwise: its prefix takes no positions, the
real tokens start at 0 (ChatGLM2/3: ``position_ids`` 0..L-1; ChatGLM-6B: 2-D positions from the input
ids alone). A prefix trained that way only reproduces its training behaviour when fed that way, so an
imported ChatGLM checkpoint keeps the spec's own mask and position conventions but evaluates the
position convention with a prefix length of 0. No model is named here: any spec whose position
convention takes positions from the caller can run a position-less prefix.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

from ..contract import CacheContract
from ..conventions import POSITIONS


@dataclass
class PositionlessContract(CacheContract):
    def model_kwargs(self, new_ids, full_ids, full_mask, prefix_len: int, cache=None) -> dict:
        kwargs = super().model_kwargs(new_ids, full_ids, full_mask, prefix_len, cache)
        convention = POSITIONS[self.spec.conventions.position_ids]
        kwargs["position_ids"] = convention(self.config, 0, full_ids, full_mask, new_ids.shape[1])
        return kwargs


def make_positionless(pm) -> None:
    """Switch a PrefixModel to a position-less prefix (in place; saved checkpoints record it)."""
    convention = pm.spec.conventions.position_ids
    if POSITIONS[convention](pm.contract.config, 0, *_probe_inputs(pm)) is None:
        raise ValueError(f"spec {pm.spec.name!r}: its position convention {convention!r} lets the model number "
                         "new tokens after its cache, so a position-less prefix cannot be fed to it")
    pm.contract = PositionlessContract(**{f.name: getattr(pm.contract, f.name) for f in fields(pm.contract)})
    pm.prefix_positions = "none"


def _probe_inputs(pm):
    """A one-token input in the spec's shape rules, to ask the convention whether it passes positions."""
    import torch

    from ..inputs import make_inputs

    ids, mask = make_inputs(pm.spec, pm.contract.config, 1, 4, torch.Generator().manual_seed(0), "cpu")
    return ids, mask, ids.shape[1]
