"""A tuple over layers of one stacked ``[2, ...]`` tensor (K at 0, V at 1): the form ChatGLM's own
``get_prompt`` hands its layers (they index ``[0]`` and ``[1]``)."""
import torch

from . import pairs_of


def pack(pairs):
    return tuple(torch.stack((k, v)) for k, v in pairs)


def unpack(cache):
    return pairs_of(cache)
