"""prefix-compat: does prefix tuning (P-Tuning v2) work on this architecture? Measured, per model.

Public API: ``prefix_tune``, ``load_prefix``, ``PrefixModel`` (``save_pretrained``, ``to_peft``),
``from_peft``, ``from_chatglm_ptuning``, ``PrefixEncoder``, ``load_spec``.
"""
from harness.core.checkpoint import CheckpointError
from harness.core.encoder import PrefixEncoder
from harness.core.interop import from_chatglm_ptuning, from_peft
from harness.core.prefix_model import PrefixModel, load_prefix, prefix_tune
from harness.core.spec import ModelSpec, SpecError, find_spec_for, load_spec, load_specs

__all__ = ["PrefixEncoder", "PrefixModel", "prefix_tune", "load_prefix", "ModelSpec", "SpecError",
           "load_spec", "load_specs", "find_spec_for", "from_peft", "from_chatglm_ptuning", "CheckpointError"]
__version__ = "0.1.0"
