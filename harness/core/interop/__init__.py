"""Prefixes from and to other tools' checkpoint formats: PEFT prefix-tuning adapters and ChatGLM's own
P-Tuning v2 checkpoints. Each converter states the format it reads as facts in its docstring."""
from .chatglm_ptuning import from_chatglm_ptuning
from .peft_adapter import from_peft, to_peft
from .positions import make_positionless

__all__ = ["from_peft", "to_peft", "from_chatglm_ptuning", "make_positionless"]
