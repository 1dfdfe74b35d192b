"""Reference Qwen (v1) causal LM: the cache contract of the hub's remote-code `QWenLMHeadModel`
(Qwen/Qwen-7B, Dec-2023 revision), written from the facts in the project notes.

Behaviour kept on purpose because a KV-cache prefix depends on it:
* per-layer cache `(k, v)`, each (B, S, H, D), keys stored AFTER rotary, past concatenated on dim 1;
  with `use_cache_quantization` it is `((q, scale, zero), (q, scale, zero))` in (B, H, S, D), dim 2.
* rotary is built for kv_seq_len = P + L and the last L rows are used: new tokens get positions
  P..P+L-1 on their own. `position_ids` are accepted, even derived from a past length read as
  `past[0][0].size(-2)` (that is H for this layout), and then never used.
* a 2-D mask must cover past + new tokens, [B, P+L]; it becomes additive (1 - m) * finfo.min in
  [B, 1, 1, K], so a [B, L] mask with a past fails on a size mismatch.
* a causal mask exists only when q_len == k_len: with a past and L > 1 the new tokens see each other
  (Dec-2023 quirk). `config.causal_with_past=True` gives the older (Aug-2023) causal behaviour.
* QWenModel calls QWenBlock with keyword arguments, so a forward pre-hook (with_kwargs=True) can swap
  `attention_mask` for a [B, 1, L, K] additive mask; the SDPA path accepts either shape.
* gradient checkpointing passes None as `layer_past` (the prefix is dropped) and the mask positionally.
* `prepare_inputs_for_generation` keeps only the last token whenever a past is given and drops the
  mask when batch == 1.
* dynamic NTK and logn scaling beyond `seq_length` (eval only); with a past, the NTK alphas of the
  previous call are reused.
Left out or changed: flash-attn, CUDA kernels, tokenizer and chat helpers; precision auto-selection
always falls back to fp32 (what the real code does without CUDA); head masks are expanded here because
`PreTrainedModel.get_head_mask` is gone in transformers 5; checkpointing is switched on by the library's
own `gradient_checkpointing_enable` (the real `value=` hook signature is gone in transformers 5).
"""
import math

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
)

try:  # transformers >= 4.50 no longer mixes generation into every PreTrainedModel
    from transformers.generation import GenerationMixin
except ImportError:  # pragma: no cover
    class GenerationMixin:
        pass


class QWenConfig(PretrainedConfig):
    model_type = "qwen"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(self, vocab_size=151936, hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                 emb_dropout_prob=0.0, attn_dropout_prob=0.0, layer_norm_epsilon=1e-6, initializer_range=0.02,
                 max_position_embeddings=8192, scale_attn_weights=True, use_cache=True, bf16=False, fp16=False,
                 fp32=False, kv_channels=128, rotary_pct=1.0, rotary_emb_base=10000, use_dynamic_ntk=True,
                 use_logn_attn=True, use_flash_attn="auto", intermediate_size=22016, no_bias=True,
                 tie_word_embeddings=False, use_cache_quantization=False, use_cache_kernel=False,
                 softmax_in_fp32=False, seq_length=8192, causal_with_past=False, **kwargs):
        # seq_length: the real class only gets it from config.json; logn/NTK scaling start beyond it.
        # causal_with_past (ours): False = Dec-2023 code, no causal mask among new tokens when a past
        # is present and L > 1; True = Aug-2023 code, causal mask offset by the past length.
        fields = dict(locals())
        for name in ("self", "kwargs", "__class__", "tie_word_embeddings"):
            fields.pop(name, None)
        for name, value in fields.items():
            setattr(self, name, value)
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.float()  # normalise in fp32, scale in the input dtype
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class RotaryEmbedding(nn.Module):
    """cos/sin tables (1, S, 1, rot_dim) for positions 0..S-1; no learnt state."""

    def __init__(self, dim, base=10000):
        super().__init__()
        self.dim, self.base = dim, base
        self.register_buffer("inv_freq", 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim)), persistent=False)
        self._ntk_alpha_cached_list = [1.0]  # read back by QWenModel when a past is present

    def forward(self, seq_len, ntk_alpha=1.0):
        base = self.base * ntk_alpha ** (self.dim / (self.dim - 2))  # NTK-aware stretch of the base
        inv_freq = 1.0 / (base ** (torch.arange(0, self.dim, 2, device=self.inv_freq.device).float() / self.dim))
        freqs = torch.outer(torch.arange(seq_len, device=inv_freq.device).float(), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)[None, :, None, :]  # (1, S, 1, rot_dim)
        return [emb.cos(), emb.sin()]


def apply_rotary_pos_emb(t, freqs):
    """t: (B, S, H, D); rotates the first rot_dim channels of each head (half-split convention)."""
    cos, sin = freqs
    rot_dim = cos.shape[-1]
    tf = t.float()
    t_rot, t_pass = tf[..., :rot_dim], tf[..., rot_dim:]
    x1, x2 = t_rot.chunk(2, dim=-1)
    t_rot = t_rot * cos + torch.cat((-x2, x1), dim=-1) * sin
    return torch.cat((t_rot, t_pass), dim=-1).type_as(t)


def quantize_cache_v(x, qmin, qmax):
    """x: (B, H, S, D) -> uint8 codes plus per-(B, H) scale/zero repeated to (B, H, S, 1)."""
    flat = x.flatten(2)
    fmax, fmin = flat.amax(-1, keepdim=True), flat.amin(-1, keepdim=True)
    scale = (fmax - fmin) / (qmax - qmin)
    zero = qmin - fmin / scale
    scale = scale.unsqueeze(-1).repeat(1, 1, x.shape[2], 1).contiguous()
    zero = zero.unsqueeze(-1).repeat(1, 1, x.shape[2], 1).contiguous()
    q = torch.clamp(x / scale + zero, qmin.to(x.device), qmax.to(x.device)).to(torch.uint8)
    return q.contiguous(), scale, zero


class QWenAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.seq_length = config.seq_length
        self.hidden_size = self.split_size = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = self.hidden_size // self.num_heads
        self.projection_size = config.kv_channels * config.num_attention_heads
        # fused qkv keeps its bias even with no_bias; c_proj is declared (hidden -> projection), as upstream
        self.c_attn = nn.Linear(config.hidden_size, 3 * self.projection_size)
        self.c_proj = nn.Linear(config.hidden_size, self.projection_size, bias=not config.no_bias)
        self.use_logn_attn = config.use_logn_attn
        self.causal_with_past = getattr(config, "causal_with_past", False)
        self.softmax_in_fp32 = getattr(config, "softmax_in_fp32", False)
        self.use_cache_quantization = getattr(config, "use_cache_quantization", False)
        # logn_tensor[0, i] scales queries at 0-based position i once the key length passes seq_length
        pos = torch.arange(1, 32768, dtype=torch.float64)
        logn = torch.where(pos > self.seq_length, pos.log() / math.log(self.seq_length), torch.ones_like(pos))
        self.register_buffer("logn_tensor", logn.float()[None, :, None, None], persistent=False)
        self.attn_dropout = nn.Dropout(config.attn_dropout_prob)
        cache_dtype = torch.bfloat16 if config.bf16 else torch.float16 if config.fp16 else torch.float
        self.cache_qmax = torch.tensor(255, dtype=cache_dtype)
        self.cache_qmin = torch.tensor(0, dtype=cache_dtype)

    def _attn(self, query, key, value, causal_mask=None, attention_mask=None, head_mask=None):
        """Explicit-softmax path, only taken with the int8 cache. query (B, H, L, D), key/value 3-tuples."""
        key = key[1] * (key[0] - key[2])  # dequantise: scale * (q - zero)
        w = torch.matmul(query, key.transpose(-1, -2)) / (value[0].size(-1) ** 0.5)  # (B, H, L, K)
        if causal_mask is not None:
            w = torch.where(causal_mask, w, torch.finfo(w.dtype).min)
        if attention_mask is not None:
            w = w + attention_mask
        w = F.softmax(w.float() if self.softmax_in_fp32 else w, dim=-1).type(query.dtype)
        w = self.attn_dropout(w)
        if head_mask is not None:
            w = w * head_mask
        out = torch.matmul(w, value[1] * (value[0] - value[2]))  # (B, H, L, D)
        return out.transpose(1, 2), w

    def forward(self, hidden_states, rotary_pos_emb_list=None, layer_past=None, attention_mask=None,
                head_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                output_attentions=False, use_cache=False):
        B, L, _ = hidden_states.shape
        query, key, value = self.c_attn(hidden_states).split(self.split_size, dim=2)
        query, key, value = (t.view(B, L, self.num_heads, self.head_dim) for t in (query, key, value))  # (B, L, H, D)

        if rotary_pos_emb_list is not None:
            # tables cover kv_seq_len = past + L; the new tokens take the last L rows
            embs = [[t[:, -L:] for t in emb] for emb in rotary_pos_emb_list]
            if len(embs) == 1:
                query, key = apply_rotary_pos_emb(query, embs[0]), apply_rotary_pos_emb(key, embs[0])
            else:  # one NTK alpha per batch row
                query = torch.cat([apply_rotary_pos_emb(query[i:i + 1], e) for i, e in enumerate(embs)], dim=0)
                key = torch.cat([apply_rotary_pos_emb(key[i:i + 1], e) for i, e in enumerate(embs)], dim=0)

        if self.use_cache_quantization:  # int8 cache lives in (B, H, S, D)
            key = quantize_cache_v(key.permute(0, 2, 1, 3), self.cache_qmin, self.cache_qmax)
            value = quantize_cache_v(value.permute(0, 2, 1, 3), self.cache_qmin, self.cache_qmax)
        if layer_past is not None:
            past_key, past_value = layer_past[0], layer_past[1]
            if self.use_cache_quantization:
                key = tuple(torch.cat((p, n), dim=2) for p, n in zip(past_key, key))
                value = tuple(torch.cat((p, n), dim=2) for p, n in zip(past_value, value))
            else:
                key = torch.cat((past_key, key), dim=1)  # (B, P+L, H, D)
                value = torch.cat((past_value, value), dim=1)
        present = (key, value) if use_cache else None

        K = key[0].size(2) if self.use_cache_quantization else key.size(1)
        if K > self.seq_length and self.use_logn_attn and not self.training:
            # the past counts toward the length: positions K-L..K-1
            query = query * self.logn_tensor[:, K - L:K].type_as(query).expand_as(query)

        causal_mask = None
        if L == K or self.causal_with_past:
            # (1, 1, L, K), True = may attend; offset so new token i sees every past and new tokens <= i
            causal_mask = torch.ones((L, K), dtype=torch.bool, device=query.device).tril(K - L).view(1, 1, L, K)
        query = query.permute(0, 2, 1, 3)  # (B, H, L, D)
        if self.use_cache_quantization:
            attn_output, attn_weight = self._attn(query, key, value, causal_mask, attention_mask, head_mask)
        else:
            key, value = key.permute(0, 2, 1, 3), value.permute(0, 2, 1, 3)  # (B, H, K, D)
            if attention_mask is not None:
                # accepts [B, 1, 1, K] (model-built) or [B, 1, L, K] (e.g. set by a block pre-hook)
                attention_mask = attention_mask.expand(-1, -1, query.size(2), -1)
                if causal_mask is not None:
                    attention_mask = attention_mask.masked_fill(~causal_mask, torch.finfo(query.dtype).min)
            else:
                attention_mask = causal_mask
            attn_output = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask).transpose(1, 2)
            attn_weight = None  # head_mask and dropout are not applied on this path, as upstream
        attn_output = self.c_proj(attn_output.contiguous().view(B, L, self.hidden_size))  # (B, L, C)

        outputs = (attn_output, present)
        if output_attentions:
            if not self.use_cache_quantization:
                raise ValueError("attention weights are not returned on the SDPA path (as in the real code)")
            outputs += (attn_weight,)
        return outputs


class QWenMLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        inner = config.intermediate_size // 2  # the config counts both SwiGLU branches
        self.w1 = nn.Linear(config.hidden_size, inner, bias=not config.no_bias)
        self.w2 = nn.Linear(config.hidden_size, inner, bias=not config.no_bias)
        self.c_proj = nn.Linear(inner, config.hidden_size, bias=not config.no_bias)

    def forward(self, x):
        return self.c_proj(self.w1(x) * F.silu(self.w2(x)))  # gate is w2, not w1


class QWenBlock(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln_1 = RMSNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.attn = QWenAttention(config)
        self.ln_2 = RMSNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.mlp = QWenMLP(config)

    def forward(self, hidden_states, rotary_pos_emb_list=None, layer_past=None, attention_mask=None,
                head_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                use_cache=False, output_attentions=False):
        attn_outputs = self.attn(self.ln_1(hidden_states), rotary_pos_emb_list, layer_past=layer_past,
                                 attention_mask=attention_mask, head_mask=head_mask, use_cache=use_cache,
                                 output_attentions=output_attentions)
        h = hidden_states + attn_outputs[0]
        h = h + self.mlp(self.ln_2(h))
        # (h, present[, attn]) with use_cache, else (h[, attn])
        return (h,) + (attn_outputs[1:] if use_cache else attn_outputs[2:])


class QWenPreTrainedModel(PreTrainedModel):
    config_class = QWenConfig
    base_model_prefix = "transformer"
    is_parallelizable = False
    supports_gradient_checkpointing = True
    _no_split_modules = ["QWenBlock"]
    _skip_keys_device_placement = "past_key_values"

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            module.weight.data.normal_(mean=0.0, std=self.config.initializer_range)
            if module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.data.normal_(mean=0.0, std=self.config.initializer_range)
            if module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()
        elif isinstance(module, RMSNorm):
            module.weight.data.fill_(1.0)
        # output projections (attn.c_proj, mlp.c_proj) get the GPT-2 depth-scaled std
        for name, p in module.named_parameters():
            if name == "c_proj.weight":
                std = self.config.initializer_range / math.sqrt(2 * self.config.num_hidden_layers)
                p.data.normal_(mean=0.0, std=std)


class QWenModel(QWenPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.gradient_checkpointing = False
        self.use_dynamic_ntk = config.use_dynamic_ntk
        self.seq_length = config.seq_length
        self.use_cache_quantization = getattr(config, "use_cache_quantization", False)
        self.wte = nn.Embedding(config.vocab_size, config.hidden_size)
        self.drop = nn.Dropout(config.emb_dropout_prob)
        rot_dim = config.kv_channels if config.rotary_pct == 1.0 else int(config.kv_channels * config.rotary_pct)
        self.rotary_emb = RotaryEmbedding(rot_dim, base=config.rotary_emb_base)
        self.h = nn.ModuleList([QWenBlock(config) for _ in range(config.num_hidden_layers)])
        self.ln_f = RMSNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.post_init()

    def get_input_embeddings(self):
        return self.wte

    def set_input_embeddings(self, new_embeddings):
        self.wte = new_embeddings

    def get_ntk_alpha(self, true_seq_len):
        context_value = math.log(true_seq_len / self.seq_length, 2) + 1
        return max(2 ** math.ceil(context_value) - 1, 1)

    def _head_mask(self, head_mask):
        # what PreTrainedModel.get_head_mask did: [H] or [layers, H] -> [layers, 1, H, 1, 1]
        n = self.config.num_hidden_layers
        if head_mask is None:
            return [None] * n
        if head_mask.dim() == 1:
            head_mask = head_mask[None, None, :, None, None].expand(n, -1, -1, -1, -1)
        elif head_mask.dim() == 2:
            head_mask = head_mask[:, None, :, None, None]
        return head_mask.to(dtype=self.dtype)

    def forward(self, input_ids=None, past_key_values=None, attention_mask=None, token_type_ids=None,
                position_ids=None, head_mask=None, inputs_embeds=None, encoder_hidden_states=None,
                encoder_attention_mask=None, use_cache=None, output_attentions=None, output_hidden_states=None,
                return_dict=None):
        cfg = self.config
        output_attentions = output_attentions if output_attentions is not None else cfg.output_attentions
        output_hidden_states = output_hidden_states if output_hidden_states is not None else cfg.output_hidden_states
        use_cache = use_cache if use_cache is not None else cfg.use_cache
        return_dict = return_dict if return_dict is not None else cfg.return_dict
        if input_ids is not None and inputs_embeds is not None:
            raise ValueError("You cannot specify both input_ids and inputs_embeds at the same time")
        elif input_ids is not None:
            input_shape = input_ids.size()
            input_ids = input_ids.view(-1, input_shape[-1])
            batch_size = input_ids.shape[0]
        elif inputs_embeds is not None:
            input_shape = inputs_embeds.size()[:-1]
            batch_size = inputs_embeds.shape[0]
        else:
            raise ValueError("You have to specify either input_ids or inputs_embeds")
        device = input_ids.device if input_ids is not None else inputs_embeds.device

        if past_key_values is None:
            past_length = 0
            past_key_values = tuple([None] * len(self.h))
        elif self.use_cache_quantization:
            past_length = past_key_values[0][0][0].size(2)
        else:
            past_length = past_key_values[0][0].size(-2)  # upstream quirk: this is H, not S
        if position_ids is None:  # built like upstream, and like upstream never used: rotary decides
            position_ids = torch.arange(past_length, input_shape[-1] + past_length, dtype=torch.long, device=device)
        position_ids = position_ids.view(-1, input_shape[-1])

        if attention_mask is not None:
            # [B, P+L] of 1/0 -> additive (B, 1, 1, P+L); a [B, L] mask with a past fails later in attention
            attention_mask = attention_mask.view(batch_size, -1)[:, None, None, :].to(dtype=self.dtype)
            attention_mask = (1.0 - attention_mask) * torch.finfo(self.dtype).min
        encoder_attention_mask = None
        head_mask = self._head_mask(head_mask)

        hidden_states = self.wte(input_ids) if inputs_embeds is None else inputs_embeds  # (B, L, C)
        kv_seq_len = hidden_states.size(1)
        if past_key_values[0] is not None:  # the true past length, from the S axis
            past_k = past_key_values[0][0]
            kv_seq_len += past_k[0].shape[2] if self.use_cache_quantization else past_k.shape[1]

        if self.training or not self.use_dynamic_ntk:
            ntk_alpha_list = [1.0]
        elif kv_seq_len != hidden_states.size(1):  # decoding: keep the alphas chosen at prefill
            ntk_alpha_list = self.rotary_emb._ntk_alpha_cached_list
        elif attention_mask is not None and kv_seq_len > self.seq_length:  # one alpha per row's real length
            true_lens = attention_mask.squeeze(1).squeeze(1).eq(0).sum(dim=-1, dtype=torch.int32)
            ntk_alpha_list = [self.get_ntk_alpha(true_lens[i].item()) for i in range(hidden_states.size(0))]
        else:
            ntk_alpha_list = [self.get_ntk_alpha(kv_seq_len)]
        self.rotary_emb._ntk_alpha_cached_list = ntk_alpha_list
        rotary_pos_emb_list = [self.rotary_emb(kv_seq_len, ntk_alpha=a) for a in ntk_alpha_list]

        hidden_states = self.drop(hidden_states)
        output_shape = input_shape + (hidden_states.size(-1),)
        if self.gradient_checkpointing and self.training:
            use_cache = False

        presents = () if use_cache else None
        all_self_attentions = () if output_attentions else None
        all_hidden_states = () if output_hidden_states else None
        for i, (block, layer_past) in enumerate(zip(self.h, past_key_values)):
            if output_hidden_states:
                all_hidden_states = all_hidden_states + (hidden_states,)
            if self.gradient_checkpointing and self.training:
                # upstream quirk: positional call with None for layer_past, so a prefix is silently dropped
                def custom_forward(*inputs, block=block):
                    return block(*inputs, use_cache, output_attentions)
                outputs = torch.utils.checkpoint.checkpoint(
                    custom_forward, hidden_states, rotary_pos_emb_list, None, attention_mask, head_mask[i],
                    encoder_hidden_states, encoder_attention_mask, use_reentrant=True)
            else:
                # keyword call: harness pre-hooks (with_kwargs=True) rely on these names
                outputs = block(hidden_states, layer_past=layer_past, rotary_pos_emb_list=rotary_pos_emb_list,
                                attention_mask=attention_mask, head_mask=head_mask[i],
                                encoder_hidden_states=encoder_hidden_states,
                                encoder_attention_mask=encoder_attention_mask, use_cache=use_cache,
                                output_attentions=output_attentions)
            hidden_states = outputs[0]
            if use_cache is True:
                presents = presents + (outputs[1],)
            if output_attentions:
                all_self_attentions = all_self_attentions + (outputs[2 if use_cache else 1],)

        hidden_states = self.ln_f(hidden_states).view(output_shape)
        if output_hidden_states:
            all_hidden_states = all_hidden_states + (hidden_states,)
        if not return_dict:
            return tuple(v for v in [hidden_states, presents, all_hidden_states] if v is not None)
        return BaseModelOutputWithPast(last_hidden_state=hidden_states, past_key_values=presents,
                                       hidden_states=all_hidden_states, attentions=all_self_attentions)


class QWenLMHeadModel(QWenPreTrainedModel, GenerationMixin):
    def __init__(self, config):
        super().__init__(config)
        if config.bf16 + config.fp16 + config.fp32 > 1:
            raise ValueError("at most one precision flag (bf16, fp16, fp32) may be set")
        if config.bf16 + config.fp16 + config.fp32 == 0:
            config.fp32 = True  # upstream picks bf16/fp16 when CUDA supports it; the reference stays fp32
        if config.use_flash_attn == "auto":
            config.use_flash_attn = bool(config.bf16 or config.fp16)  # recorded only: never used here
        self.transformer = QWenModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.bf16:
            self.transformer.bfloat16()
            self.lm_head.bfloat16()
        if config.fp16:
            self.transformer.half()
            self.lm_head.half()
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def prepare_inputs_for_generation(self, input_ids, past_key_values=None, inputs_embeds=None, **kwargs):
        # Upstream quirk: any past means "decoding", so a prefix passed as past truncates the prompt.
        # transformers 5 hands its own cache over as `cache=` (in kwargs): ignored, like upstream,
        # so every step recomputes the whole sequence there.
        if past_key_values:
            input_ids = input_ids[:, -1].unsqueeze(-1)
        attention_mask = None if input_ids.size(0) == 1 else kwargs.get("attention_mask", None)
        if inputs_embeds is not None and past_key_values is None:
            model_inputs = {"inputs_embeds": inputs_embeds}
        else:
            model_inputs = {"input_ids": input_ids}
        model_inputs.update({"past_key_values": past_key_values, "use_cache": kwargs.get("use_cache"),
                             "attention_mask": attention_mask})
        return model_inputs

    def forward(self, input_ids=None, past_key_values=None, attention_mask=None, token_type_ids=None,
                position_ids=None, head_mask=None, inputs_embeds=None, encoder_hidden_states=None,
                encoder_attention_mask=None, labels=None, use_cache=None, output_attentions=None,
                output_hidden_states=None, return_dict=None):
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        transformer_outputs = self.transformer(
            input_ids, past_key_values=past_key_values, attention_mask=attention_mask,
            token_type_ids=token_type_ids, position_ids=position_ids, head_mask=head_mask,
            inputs_embeds=inputs_embeds, encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask, use_cache=use_cache,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states,
            return_dict=return_dict)
        lm_logits = self.lm_head(transformer_outputs[0])  # (B, L, V)
        loss = None
        if labels is not None:
            labels = labels.to(lm_logits.device)
            shift_logits = lm_logits[..., :-1, :].contiguous()
            shift_labels = labels[..., 1:].contiguous()
            loss = F.cross_entropy(shift_logits.view(-1, shift_logits.size(-1)), shift_labels.view(-1))
        if not return_dict:
            output = (lm_logits,) + tuple(transformer_outputs[1:])
            return ((loss,) + output) if loss is not None else output
        return CausalLMOutputWithPast(loss=loss, logits=lm_logits,
                                      past_key_values=transformer_outputs.past_key_values,
                                      hidden_states=transformer_outputs.hidden_states,
                                      attentions=transformer_outputs.attentions)

    @staticmethod
    def _reorder_cache(past_key_values, beam_idx):
        return tuple(tuple(s.index_select(0, beam_idx.to(s.device)) for s in layer) for layer in past_key_values)
