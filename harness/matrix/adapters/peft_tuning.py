"""The ``peft`` adapter: PEFT's prefix tuning (``PrefixTuningConfig`` + ``get_peft_model``), used as
its users use it: its own forward, its own ``generate()``, its own save/load."""
from __future__ import annotations

import copy

import torch

from harness.core.layout import kv_parts


class PeftAttached:
    def __init__(self, peft_model):
        self.model = peft_model
        self.base = peft_model.get_base_model()
        self.cfg = peft_model.peft_config[peft_model.active_adapter]
        self.num_virtual_tokens = self.cfg.num_virtual_tokens

    def outputs(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=True)

    def logits(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    def _sizes(self, kv=None):
        """PEFT's (layers, heads, head dim); with model K/V (canonical form), refuse K/V PEFT cannot hold."""
        cfg = self.cfg
        heads, d = cfg.num_attention_heads, cfg.token_dim // cfg.num_attention_heads
        if kv is not None:
            k, v = kv_parts(kv)  # (layers, H, P, D*)
            (layers, h, _, dk), dv = k.shape, v.shape[-1]
            if dk != dv:  # MLA: PEFT emits one (2, B, heads, P, d) tensor a layer, K and V alike
                raise ValueError(
                    f"PEFT's prefix cannot hold this model's K/V, so no real-token prefix can be set: PEFT sizes K and V "
                    f"alike ({cfg.num_layers} layers x {heads} heads x {d} dims), the model caches K of {layers} x {h} x "
                    f"{dk} and V of {layers} x {v.shape[1]} x {dv} (K and V head dims differ)"
                )
            if (cfg.num_layers, heads, d) != (layers, h, dk):
                raise ValueError(
                    f"PEFT's prefix cannot hold this model's K/V, so no real-token prefix can be set: PEFT sized it "
                    f"{cfg.num_layers} layers x {heads} heads x {d} dims, the model caches {layers} x {h} x {dk}"
                )
        return cfg.num_layers, heads, d

    def _weight(self):
        return self.model.prompt_encoder[self.model.active_adapter].embedding.weight

    def plant(self, kv):
        """Write K/V (layers, 2, H, P, D) into PEFT's embedding, whose rows PEFT views as
        (P, layers * 2, heads, token_dim // heads) and permutes to per-layer (2, B, heads, P, d)."""
        self._sizes(kv)
        weight = self._weight()
        with torch.no_grad():
            weight.copy_(kv.permute(3, 0, 1, 2, 4).reshape(kv.shape[3], -1).to(weight))

    def planted_grad(self):
        """The gradient with respect to PEFT's embedding, read as K/V (layers, 2, H, P, D)."""
        grad = self._weight().grad  # (P, layers * 2 * heads * d)
        if grad is None:
            return None
        layers, heads, d = self._sizes()
        return grad.view(grad.shape[0], layers, 2, heads, d).permute(1, 2, 3, 0, 4)

    def prefix_parameters(self):
        """PEFT's prefix is its prompt encoder; everything else must stay frozen (the gradients
        check looks at all the other parameters)."""
        return {f"prompt_encoder.{n}": p for n, p in self.model.prompt_encoder.named_parameters()}

    def generate(self, input_ids, attention_mask, max_new_tokens):
        """PEFT's own generate(): new tokens (B, n) and each step's raw logits (B, n, V) where the
        installed transformers reports them (``output_logits``), else None."""
        # exactly n greedy tokens picked from the raw logits, as the oracle picks them: no end-of-sequence stop
        # (and so no min_new_tokens processor pushing the EOS logit to -inf, which would change the argmax)
        config = copy.deepcopy(self.base.generation_config)
        config.eos_token_id, config.min_new_tokens, config.do_sample = None, None, False
        kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                      generation_config=config, return_dict_in_generate=True)
        try:
            out = self.model.generate(**kwargs, output_logits=True)
        except (TypeError, ValueError) as e:  # transformers before output_logits
            if "output_logits" not in str(e):
                raise
            out = self.model.generate(**kwargs)
        logits = getattr(out, "logits", None)
        tokens = out.sequences[:, input_ids.shape[1]:]
        return tokens, (torch.stack(logits, dim=1) if logits else None)

    def save(self, directory):
        self.model.save_pretrained(str(directory))

    def reload(self, fresh_base, directory):
        from peft import PeftModel

        return type(self)(PeftModel.from_pretrained(fresh_base, str(directory)))


def attach(model, spec, variant, num_virtual_tokens):
    from peft import PrefixTuningConfig, get_peft_model

    config = PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=num_virtual_tokens)
    return PeftAttached(get_peft_model(model, config))
