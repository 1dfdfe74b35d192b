"""Attention-mask and position-id conventions for a model running behind a prefix.

Each convention answers one question for a *virtual full sequence*: P prefix positions followed by
every real token so far (``full_ids``, ``full_mask`` of shape (B, T)); the model is fed only the
last ``n_new`` tokens. Masks and positions are what the model would have used had the prefix been
real tokens, sliced to the new tokens. With P = 0 they reduce to the model's own defaults, which
is how the full-context oracle calls the model too.

Names are chosen by a spec's ``conventions`` section (see names.py).
"""
from __future__ import annotations

import torch


# ----------------------------------------------------------------------------- attention masks
def extend_2d(config, prefix_len, full_ids, full_mask, n_new):
    """A 2-D padding mask over the cache: P ones for the prefix, then the real tokens' mask.
    (B, P + T). LLaMA, Qwen1.5, Qwen v1 and ChatGLM2/3 build their 4-D masks from it."""
    b = full_ids.shape[0]
    ones = torch.ones(b, prefix_len, dtype=full_mask.dtype, device=full_mask.device)
    return torch.cat((ones, full_mask), dim=1)


def glm_bool_4d(config, prefix_len, full_ids, full_mask, n_new):
    """ChatGLM-6B's inverted boolean mask (True = masked), (B, 1, n_new, P + T): attention is
    bidirectional over the context (every position before <bos>, the prefix included) and causal
    after it; padding columns are masked. The model builds this itself only when it has no past."""
    b, t = full_ids.shape
    total = prefix_len + t
    allowed = torch.ones(total, total, dtype=torch.bool, device=full_ids.device).tril()
    allowed = allowed.unsqueeze(0).repeat(b, 1, 1)  # (B, T', T')
    for i in range(b):
        context = prefix_len + _first_index(full_ids[i], config.bos_token_id, "bos_token_id")
        allowed[i, :, :context] = True
    pad = torch.cat((torch.ones(b, prefix_len, dtype=torch.bool, device=full_ids.device), full_mask.bool()), dim=1)
    allowed &= pad[:, None, :]
    return (~allowed[:, -n_new:, :]).unsqueeze(1)


MASKS = {"extend_2d": extend_2d, "glm_bool_4d": glm_bool_4d}


# ----------------------------------------------------------------------------- position ids
def model_continues(config, prefix_len, full_ids, full_mask, n_new):
    """The model numbers new tokens after its cache length itself (P..P+L-1): pass nothing."""
    return None


def explicit_offset(config, prefix_len, full_ids, full_mask, n_new):
    """The harness passes each token's position in the virtual full sequence, counted over real
    tokens only: P + (real tokens before it). A left-padded row then gets the positions it would
    have unpadded (what batched generation needs), and a model that would restart at 0 behind a
    past (ChatGLM2/3: ``position_ids=None`` => 0..L-1) continues after the prefix. (B, n_new)"""
    return _real_positions(prefix_len, full_mask)[:, -n_new:].contiguous()


def glm_2d(config, prefix_len, full_ids, full_mask, n_new):
    """ChatGLM-6B's 2-D positions (B, 2, n_new): row 0 counts up to the context and then stays at
    the [gMASK]/[MASK] position; row 1 (block positions) is 0 over the context and 1, 2, ... after.
    Counted over real tokens, so left padding does not move them."""
    b, t = full_ids.shape
    pos_all = _real_positions(prefix_len, full_mask)  # (B, P + T)
    rows = []
    for i in range(b):
        context = prefix_len + _first_index(full_ids[i], config.bos_token_id, "bos_token_id")
        mask_at = prefix_len + _mask_index(config, full_ids[i])
        pos = pos_all[i].clone()
        block = torch.zeros_like(pos)
        block[context:] = pos[context:] - pos[context] + 1
        pos[context:] = pos[mask_at]
        rows.append(torch.stack((pos, block)))
    return torch.stack(rows)[:, :, -n_new:]


def _real_positions(prefix_len, full_mask) -> torch.Tensor:
    """(B, P + T): position of every slot of [prefix; tokens], counting real tokens only (padding
    slots repeat their neighbour's value; they are masked anyway)."""
    b = full_mask.shape[0]
    real = torch.cat((torch.ones(b, prefix_len, dtype=torch.long, device=full_mask.device), full_mask.long()), dim=1)
    return (real.cumsum(1) - 1).clamp_min(0)


POSITIONS = {"model_continues": model_continues, "explicit_offset": explicit_offset, "glm_2d": glm_2d}


# ----------------------------------------------------------------------------- helpers
def _first_index(row: torch.Tensor, token_id: int, what: str) -> int:
    hits = (row == token_id).nonzero()
    if len(hits) == 0:
        raise ValueError(f"every input row must contain the {what} token {token_id}")
    return int(hits[0])


def _mask_index(config, row: torch.Tensor) -> int:
    """[gMASK] if present, else [MASK] (the real code's preference)."""
    for attr in ("gmask_token_id", "mask_token_id"):
        token = getattr(config, attr, None)
        if token is not None and bool((row == token).any()):
            return _first_index(row, token, attr)
    raise ValueError("every input row must contain [gMASK] or [MASK]")
