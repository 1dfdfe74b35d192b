"""A tuple over layers of ``(k, v)`` tuples: the legacy format, and what remote code (Qwen v1,
ChatGLM) takes and returns."""
from . import pairs_of


def pack(pairs):
    return tuple((k, v) for k, v in pairs)


def unpack(cache):
    return pairs_of(cache)
