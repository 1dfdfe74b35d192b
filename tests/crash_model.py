"""A model whose forward kills its process, as a segfaulting kernel would (for the no-lost-row test)."""
import os

from transformers import LlamaConfig, LlamaForCausalLM


class CrashConfig(LlamaConfig):
    pass


class CrashLM(LlamaForCausalLM):
    def forward(self, *args, **kwargs):
        os._exit(3)
