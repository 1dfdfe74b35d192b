"""Fixes for known model quirks, declared in a spec and applied when a prefix is attached.

A fix never edits the model's code: it hooks the modules the spec names, so the same fix works on
our reference models and on the real hub remote code.
"""
from __future__ import annotations

import torch


def causal_mask_with_past(model, fix, contract) -> list:
    """Qwen (v1, Dec-2023) drops its causal mask whenever a past is present and several tokens are
    fed, so prefix training would be bidirectional. Before each ``fix.module_class`` block runs,
    turn the (B, 1, 1, K) additive padding mask it receives into (B, 1, L, K) with the causal
    structure among the L new tokens added (all past/prefix columns stay visible)."""

    def hook(module, args, kwargs):
        mask = kwargs.get("attention_mask")
        hidden = args[0] if args else kwargs.get("hidden_states")
        if mask is None or hidden is None or mask.dim() != 4 or mask.shape[2] != 1:
            return None
        n_new, total = hidden.shape[1], mask.shape[-1]
        if n_new == 1 or n_new == total:  # decoding one token, or no past: the model is right
            return None
        past = total - n_new
        rows = torch.arange(n_new, device=mask.device)[:, None]
        cols = torch.arange(total, device=mask.device)[None, :]
        future = cols > past + rows  # (L, K): True where a new token would see a later one
        blocked = torch.zeros(n_new, total, dtype=mask.dtype, device=mask.device)
        blocked = blocked.masked_fill(future, torch.finfo(mask.dtype).min)
        kwargs["attention_mask"] = (mask + blocked).clamp(min=torch.finfo(mask.dtype).min)  # (B, 1, L, K)
        return args, kwargs

    handles = []
    for module in model.modules():
        if type(module).__name__ == fix.module_class:
            handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
    if not handles:
        raise LookupError(f"fix {fix.name}: the model has no module of class {fix.module_class}")
    return handles


FIXES = {"causal_mask_with_past": causal_mask_with_past}


def apply_fixes(model, spec, contract) -> list:
    handles = []
    for fix in spec.fixes:
        handles.extend(FIXES[fix.name](model, fix, contract))
    return handles
