"""Adapters: ways of attaching a prefix to a model, compared side by side in the matrix.

- ``harness``: ours; the prefix in the model's own layout and container, with its conventions and fixes.
- ``naive``: the classic P-Tuning v2 recipe, ``[b, h, s, d]`` for every model (meant for concatenation
  on dim 2), with everything else done right: it isolates the layout question.
- ``peft``: PEFT's ``PrefixTuningConfig`` through ``get_peft_model``.

Every adapter returns an object with the same small interface (see ``Attached``) so checks are
written once.
"""
from __future__ import annotations

import importlib
from typing import Protocol

import torch

MODULES = {"harness": "ours", "naive": "naive", "peft": "peft_tuning"}


class Attached(Protocol):
    base: torch.nn.Module  # the frozen model, for the full-context oracle
    num_virtual_tokens: int

    def logits(self, input_ids, attention_mask) -> torch.Tensor: ...  # (B, L, V)
    def plant(self, kv: torch.Tensor) -> None: ...  # (layers, 2, H, P, D)
    def prefix_parameters(self) -> dict[str, torch.nn.Parameter]: ...
    def generate(self, input_ids, max_new_tokens: int) -> torch.Tensor: ...  # (B, n) new tokens
    def save(self, directory) -> None: ...
    def reload(self, fresh_base, directory) -> "Attached": ...


def attach(name: str, model, spec, variant, num_virtual_tokens: int) -> Attached:
    module = importlib.import_module(f"{__name__}.{MODULES[name]}")
    return module.attach(model, spec, variant, num_virtual_tokens)
