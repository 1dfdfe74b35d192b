"""The ``harness`` adapter: our PrefixModel, spec-driven."""
from __future__ import annotations

from ..prefix_model import PrefixModel, load_prefix


class PrefixModelAttached:
    def __init__(self, pm: PrefixModel):
        self.pm = pm
        self.base = pm.base
        self.num_virtual_tokens = pm.num_virtual_tokens

    def logits(self, input_ids, attention_mask):
        return self.pm(input_ids, attention_mask=attention_mask).logits

    def plant(self, kv):
        self.pm.encoder.plant(kv)

    def prefix_parameters(self):
        return {f"encoder.{n}": p for n, p in self.pm.encoder.named_parameters()}

    def generate(self, input_ids, max_new_tokens):
        return self.pm.generate(input_ids, max_new_tokens=max_new_tokens)[:, input_ids.shape[1]:]

    def save(self, directory):
        self.pm.save_prefix(directory)

    def reload(self, fresh_base, directory):
        return type(self)(load_prefix(fresh_base, directory, spec=self.pm.spec))


def attach(model, spec, variant, num_virtual_tokens, layout=None):
    return PrefixModelAttached(PrefixModel(model, spec, num_virtual_tokens, layout=layout, fixes=variant.apply_fixes))
