"""The ``harness`` adapter: our PrefixModel, spec-driven."""
from __future__ import annotations

from harness.core.prefix_model import PrefixModel, load_prefix


class PrefixModelAttached:
    def __init__(self, pm: PrefixModel):
        self.pm = pm
        self.base = pm.base
        self.num_virtual_tokens = pm.num_virtual_tokens

    def outputs(self, input_ids, attention_mask):
        return self.pm(input_ids, attention_mask=attention_mask)

    def logits(self, input_ids, attention_mask):
        return self.outputs(input_ids, attention_mask).logits

    def plant(self, kv):
        self.pm.encoder.plant(kv)

    def prefix_parameters(self):
        return {f"encoder.{n}": p for n, p in self.pm.encoder.named_parameters()}

    def planted_grad(self):
        """The gradient with respect to the K/V the encoder holds, in the form ``plant`` takes
        ((layers, 2, H, P, D), or a (K, V) pair where their head dims differ); None when nothing reached it."""
        enc = self.pm.encoder
        if enc.mlp is not None:
            raise ValueError("planted K/V need an encoder without projection")
        grad = enc.embedding.weight.grad  # (P, width)
        if grad is None:
            return None
        return enc.as_kv(grad)

    def generate(self, input_ids, attention_mask, max_new_tokens):
        """New tokens (B, n) and each step's logits (B, n, V)."""
        out, logits = self.pm.generate(input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                                       output_logits=True)
        return out[:, input_ids.shape[1]:], logits

    def save(self, directory):
        self.pm.save_pretrained(directory)  # the safetensors format users get

    def reload(self, fresh_base, directory):
        return type(self)(load_prefix(fresh_base, directory, spec=self.pm.spec))


def attach(model, spec, variant, num_virtual_tokens, layout=None):
    return PrefixModelAttached(PrefixModel(model, spec, num_virtual_tokens, layout=layout, fixes=variant.apply_fixes))
