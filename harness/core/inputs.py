"""Random model inputs that respect a spec's input rules (vocab limit, tokens every row must hold).

Below the matrix so that ``validate`` (core) and the checks draw inputs the same way.
"""
from __future__ import annotations

import torch


def random_tokens(spec, config, shape, generator, device) -> torch.Tensor:
    """Random ids below the spec's vocab limit (special tokens sit above it where a model has them)."""
    limit = spec.inputs.vocab_limit.evaluate(config) if spec.inputs.vocab_limit else config.vocab_size
    return torch.randint(0, limit, shape, generator=generator).to(device)


def make_inputs(spec, config, batch, length, generator, device, lengths=None, side="right"):
    """(ids, mask), padded to ``length`` on ``side`` when ``lengths`` are given, with the tokens every
    row must contain (``inputs.insert_tokens``) inserted at ``inputs.insert_at`` of its real tokens."""
    ids = random_tokens(spec, config, (batch, length), generator, device)
    inserts = [t.evaluate(config) for t in spec.inputs.insert_tokens]
    lengths = lengths or [length] * batch
    mask = torch.zeros(batch, length, dtype=torch.long, device=device)
    for i, n in enumerate(lengths):
        start = length - n if side == "left" else 0  # first real token of the row
        mask[i, start:start + n] = 1
        if inserts:
            at = start + (spec.inputs.insert_at if spec.inputs.insert_at >= 0 else n + spec.inputs.insert_at)
            ids[i, at:at + len(inserts)] = torch.tensor(inserts, device=device)
        ids[i, mask[i] == 0] = 0  # padding
    return ids, mask
