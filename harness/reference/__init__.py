"""Reference models of hub-only architectures' cache contracts.

Written from the facts of each family's public remote code (see the facts file in the project
notes), never copied from it: small causal LMs whose attention, masks, positions and KV cache
behave like the real code on every point that matters to a prefix, quirks included. CI runs
these because the real code lives only on the hub.
"""
