"""The vocabularies a spec may use, in one place so validation and the code that acts agree.

Containers, mask and position conventions and fixes are implemented one module (or one function)
per name; adding a genuinely new cache convention means adding a name here and its module.
"""

ADAPTERS = ("harness", "naive", "peft")
CHECKS = ("accepts", "equivalence", "gradients", "train", "generate", "save_load", "checkpointing", "hf_generate")
CODE_SOURCES = ("transformers", "reference", "remote")

# harness/core/containers/<name>.py
CONTAINERS = ("transformers_cache", "tuples", "stacked")
CACHE_ARGUMENTS = ("auto", "past_key_values", "cache")
# harness/core/conventions.py
MASK_CONVENTIONS = ("extend_2d", "glm_bool_4d")
POSITION_CONVENTIONS = ("model_continues", "explicit_offset", "glm_2d")
# harness/core/fixes.py
FIXES = ("causal_mask_with_past",)
# The matrix's dtype and attention-implementation axes (harness/matrix/axes.py); the short names are
# what a cell id and table row add for a non-default dtype.
DTYPES = ("float32", "bfloat16", "float16", "float64")
DTYPE_SHORT = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "float64": "fp64"}
ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2")
