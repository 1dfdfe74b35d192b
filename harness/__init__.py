"""prefix-compat: does prefix tuning (P-Tuning v2) work on this architecture? Measured, per model.

Public API: ``prefix_tune``, ``load_prefix``, ``PrefixModel``, ``PrefixEncoder``, ``load_spec``.
"""
from harness.core.encoder import PrefixEncoder
from harness.core.prefix_model import PrefixModel, load_prefix, prefix_tune
from harness.core.spec import ModelSpec, SpecError, find_spec_for, load_spec, load_specs

__all__ = ["PrefixEncoder", "PrefixModel", "prefix_tune", "load_prefix", "ModelSpec", "SpecError",
           "load_spec", "load_specs", "find_spec_for"]
__version__ = "0.1.0"
