"""prefix-compat: does prefix tuning (P-Tuning v2) work on this architecture? Measured, per model.

Public API: ``prefix_tune``, ``load_prefix``, ``PrefixModel`` (``save_pretrained``, ``to_peft``),
``from_peft``, ``from_chatglm_ptuning``, ``PrefixEncoder``, ``load_spec``.

The names load on first use: ``import harness`` alone imports nothing heavy, because pytest imports
this package in every run where it is installed (the ``pytest11`` entry point, harness/pytest_entry.py).
"""
from importlib import import_module

_EXPORTS = {
    "PrefixEncoder": "harness.core.encoder",
    "PrefixModel": "harness.core.prefix_model", "prefix_tune": "harness.core.prefix_model",
    "load_prefix": "harness.core.prefix_model",
    "from_peft": "harness.core.interop", "from_chatglm_ptuning": "harness.core.interop",
    "CheckpointError": "harness.core.checkpoint",
    "ModelSpec": "harness.core.spec", "SpecError": "harness.core.spec", "load_spec": "harness.core.spec",
    "load_specs": "harness.core.spec", "find_spec_for": "harness.core.spec",
}
__all__ = list(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'harness' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
