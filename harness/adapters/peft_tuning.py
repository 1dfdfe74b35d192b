"""The ``peft`` adapter: PEFT's prefix tuning (``PrefixTuningConfig`` + ``get_peft_model``), used as
its users use it: its own forward, its own ``generate()``, its own save/load."""
from __future__ import annotations

import torch


class PeftAttached:
    def __init__(self, peft_model):
        self.model = peft_model
        self.base = peft_model.get_base_model()
        self.cfg = peft_model.peft_config[peft_model.active_adapter]
        self.num_virtual_tokens = self.cfg.num_virtual_tokens

    def logits(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    def plant(self, kv):
        """Write K/V (layers, 2, H, P, D) into PEFT's embedding, whose rows PEFT views as
        (P, layers * 2, heads, token_dim // heads) and permutes to per-layer (2, B, heads, P, d)."""
        cfg = self.cfg
        heads, d = cfg.num_attention_heads, cfg.token_dim // cfg.num_attention_heads
        layers, _, h, p, dim = kv.shape
        if (cfg.num_layers, heads, d) != (layers, h, dim):
            raise ValueError(
                f"PEFT's prefix cannot hold this model's K/V, so no real-token prefix can be set: PEFT sized it "
                f"{cfg.num_layers} layers x {heads} heads x {d} dims, the model caches {layers} x {h} x {dim}"
            )
        weight = self.model.prompt_encoder[self.model.active_adapter].embedding.weight
        with torch.no_grad():
            weight.copy_(kv.permute(3, 0, 1, 2, 4).reshape(p, -1).to(weight))

    def prefix_parameters(self):
        """PEFT's prefix is its prompt encoder; everything else must stay frozen (the gradients
        check looks at all the other parameters)."""
        return {f"prompt_encoder.{n}": p for n, p in self.model.prompt_encoder.named_parameters()}

    def generate(self, input_ids, max_new_tokens):
        out = self.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                  max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                                  do_sample=False)
        return out[:, input_ids.shape[1]:]

    def save(self, directory):
        self.model.save_pretrained(str(directory))

    def reload(self, fresh_base, directory):
        from peft import PeftModel

        return type(self)(PeftModel.from_pretrained(fresh_base, str(directory)))


def attach(model, spec, variant, num_virtual_tokens):
    from peft import PrefixTuningConfig, get_peft_model

    config = PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=num_virtual_tokens)
    return PeftAttached(get_peft_model(model, config))
