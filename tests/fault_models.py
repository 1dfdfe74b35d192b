"""Models that misbehave on purpose, for the plugin's fault-injection tests (built by specs in a
temporary folder; PYTHONPATH points at tests/)."""
import time

from transformers import LlamaConfig, LlamaForCausalLM


class FaultConfig(LlamaConfig):
    pass


class HangingLM(LlamaForCausalLM):
    """A forward that never returns (as a deadlocked kernel would)."""

    def forward(self, *args, **kwargs):
        time.sleep(3600)


class MissingPackageLM(LlamaForCausalLM):
    """A forward that needs a package that is not installed (remote code importing einops)."""

    def forward(self, *args, **kwargs):
        raise ModuleNotFoundError("No module named 'einops'")


class RaisingLM(LlamaForCausalLM):
    """A forward that always fails, even on real tokens with no adapter."""

    def forward(self, *args, **kwargs):
        raise RuntimeError("Sizes of tensors must match except in dimension 1")


class RejectsCacheLM(LlamaForCausalLM):
    """Runs on real tokens, rejects any cache handed in: fails only where an adapter runs it."""

    def forward(self, *args, **kwargs):
        if kwargs.get("cache") is not None or kwargs.get("past_key_values") is not None:
            raise RuntimeError("Sizes of tensors must match except in dimension 1")
        return super().forward(*args, **kwargs)


class UnbuildableConfig(LlamaConfig):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if kwargs:  # transformers builds an empty default config for introspection; the spec's fails
            raise OSError("cannot read the checkpoint's config (injected)")
