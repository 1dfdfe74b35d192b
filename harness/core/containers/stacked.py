"""A tuple over layers of one stacked ``[2, ...]`` tensor (K at 0, V at 1): the form ChatGLM's own
``get_prompt`` hands its layers (they index ``[0]`` and ``[1]``)."""
import torch

from . import pairs_of


def pack(pairs):
    for k, v in pairs:
        if k.shape != v.shape:  # one tensor cannot hold K and V of different head dims (kv.v_head_dim)
            raise ValueError(f"the stacked container holds K and V in one tensor, so they must share a shape; got "
                             f"K {tuple(k.shape)} and V {tuple(v.shape)}: use a container with separate K and V")
    return tuple(torch.stack((k, v)) for k, v in pairs)


def unpack(cache):
    return pairs_of(cache)
