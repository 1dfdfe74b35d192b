"""Reference model of ChatGLM2-6B / ChatGLM3-6B (`ChatGLMForConditionalGeneration` remote code).

Written from the facts of the public remote code, not copied from it. What a KV-cache prefix sees:
  * cache: tuple over layers of `(k, v)`, each (S, B, G, D) sequence-first, keys stored after rotary,
    past concatenated on dim 0; G = multi_query_group_num (if multi_query_attention) else heads, D = kv_channels.
  * positions: `position_ids=None` means 0..L-1 even with a past, so a prefix is position-less unless the
    caller passes P + arange(L). Rotary turns only the first half of each head, in interleaved pairs.
  * mask: 2-D padding mask [B, P+L]; with a past and L != 1, `get_masks` builds [B, 1, L, P+L] (prefix columns
    attended, True = masked), reading P from `past_key_values[0][0].shape[0]`. Without a mask and without a
    past, SDPA's `is_causal` fast path; with a past and L == 1 and no padding, no mask at all.
  * built-in P-Tuning v2: `pre_seq_len` -> `PrefixEncoder` -> `get_prompt` gives per-layer stacked
    (2, P, B, G, D) tensors, dropout 0.1, every other weight frozen, P ones prepended to the mask.
ChatGLM2 vs ChatGLM3: same weights and forward; only the rotary table differs. ChatGLM2 builds theta and
the position index in the parameter dtype (under bf16/fp16, large positions round), ChatGLM3 in float32.
`ChatGLMConfig(rope_fp32_theta=True)` selects the ChatGLM3 behaviour; identical in float32.
Left out on purpose: tokenizer, chat/stream_chat, quantization, skip_init, torch.jit and the torch<2 path.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
)

try:
    from transformers import GenerationMixin
except ImportError:  # pragma: no cover - very old transformers
    from transformers.generation.utils import GenerationMixin

# transformers 5 renamed the output field `past_key_values` to `cache` (the old name is still a read property)
_CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


class ChatGLMConfig(PretrainedConfig):
    model_type = "chatglm"
    # transformers 5 generation code reads the standard name; ChatGLM calls it num_layers
    attribute_map = {"num_hidden_layers": "num_layers"}
    # the real model reads config.max_length in __init__; transformers 5 has no such default. Annotated so that
    # transformers 5 (configs are dataclasses there) counts it as a model field, not as a stray generation
    # parameter (generate() and save_pretrained() raise on those); None there keeps generation defaults intact
    max_length: Optional[int] = None

    def __init__(self, num_layers=28, padded_vocab_size=65024, hidden_size=4096, ffn_hidden_size=13696,
                 kv_channels=128, num_attention_heads=32, seq_length=2048, hidden_dropout=0.0,
                 classifier_dropout=None, attention_dropout=0.0, layernorm_epsilon=1e-5, rmsnorm=True,
                 apply_residual_connection_post_layernorm=False, post_layer_norm=True, add_bias_linear=False,
                 add_qkv_bias=False, bias_dropout_fusion=True, multi_query_attention=False,
                 multi_query_group_num=1, apply_query_key_layer_scaling=True, attention_softmax_in_fp32=True,
                 fp32_residual_connection=False, quantization_bit=0, pre_seq_len=None, prefix_projection=False,
                 original_rope=True, rope_fp32_theta=False, use_cache=True, max_length=None,
                 initializer_range=0.02, **kwargs):
        # initializer_range (ours): std of the random init; the real code leaves weights uninitialised
        self.initializer_range = initializer_range
        self.num_layers = num_layers
        self.vocab_size = padded_vocab_size
        self.padded_vocab_size = padded_vocab_size
        self.hidden_size = hidden_size
        self.ffn_hidden_size = ffn_hidden_size
        self.kv_channels = kv_channels
        self.num_attention_heads = num_attention_heads
        self.seq_length = seq_length
        self.hidden_dropout = hidden_dropout
        self.classifier_dropout = classifier_dropout
        self.attention_dropout = attention_dropout
        self.layernorm_epsilon = layernorm_epsilon
        self.rmsnorm = rmsnorm
        self.apply_residual_connection_post_layernorm = apply_residual_connection_post_layernorm
        self.post_layer_norm = post_layer_norm
        self.add_bias_linear = add_bias_linear
        self.add_qkv_bias = add_qkv_bias
        self.bias_dropout_fusion = bias_dropout_fusion
        self.multi_query_attention = multi_query_attention
        self.multi_query_group_num = multi_query_group_num
        self.apply_query_key_layer_scaling = apply_query_key_layer_scaling
        self.attention_softmax_in_fp32 = attention_softmax_in_fp32
        self.fp32_residual_connection = fp32_residual_connection
        self.quantization_bit = quantization_bit
        self.pre_seq_len = pre_seq_len
        self.prefix_projection = prefix_projection
        self.original_rope = original_rope  # read by the real model (its config.json sets it); no effect
        self.rope_fp32_theta = rope_fp32_theta  # False: ChatGLM2 rotary table, True: ChatGLM3
        # transformers 5 drops unknown generation keys (use_cache, max_length) from kwargs: set them ourselves
        self.use_cache = use_cache
        kwargs.setdefault("tie_word_embeddings", False)  # as the hub config.json: output_layer is untied
        super().__init__(**kwargs)
        if max_length is not None:  # else 4.x's own default (20) or None under 5.x
            self.max_length = max_length


class PrefixEncoder(nn.Module):
    """P-Tuning v2 prompt: (B, P) token ids -> (B, P, layers * 2 * G * D), optionally through an MLP."""

    def __init__(self, config: ChatGLMConfig):
        super().__init__()
        self.prefix_projection = config.prefix_projection
        kv_size = config.num_layers * config.kv_channels * config.multi_query_group_num * 2
        self.embedding = nn.Embedding(config.pre_seq_len, kv_size)
        if self.prefix_projection:
            self.trans = nn.Sequential(nn.Linear(kv_size, config.hidden_size), nn.Tanh(),
                                       nn.Linear(config.hidden_size, kv_size))

    def forward(self, prefix: torch.Tensor):
        out = self.embedding(prefix)
        return self.trans(out) if self.prefix_projection else out


class RotaryEmbedding(nn.Module):
    """Rotary table over `dim` = head_dim // 2 channels: only the first half of every head rotates."""

    def __init__(self, dim, original_impl=False, device=None, dtype=None, fp32_theta=False):
        super().__init__()
        # persistent like the real one (so state dicts match); only its dtype/device are used: the table
        # follows the model when it is cast, which is what makes ChatGLM2's bf16 positions round
        inv_freq = 1.0 / (10000 ** (torch.arange(0, dim, 2, device=device).to(dtype=dtype) / dim))
        self.register_buffer("inv_freq", inv_freq)
        self.dim, self.original_impl, self.fp32_theta = dim, original_impl, fp32_theta

    def forward(self, max_seq_len, offset=0):
        dtype, device = self.inv_freq.dtype, self.inv_freq.device
        work = torch.float32 if self.fp32_theta else dtype  # ChatGLM3 vs ChatGLM2
        theta = 1.0 / (10000 ** (torch.arange(0, self.dim, 2, dtype=work, device=device) / self.dim))
        pos = torch.arange(max_seq_len, dtype=work, device=device)
        angles = torch.outer(pos, theta).float()  # (S, D/4)
        table = torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1)  # (S, D/4, 2)
        return table.to(dtype) if dtype in (torch.float16, torch.bfloat16) else table


def apply_rotary_pos_emb(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    # x: (L, B, H, D); rope: (>=L, B or 1, R/2, 2) with R = D/2 rotated channels, pairs (2i, 2i+1)
    length, heads = x.size(0), x.size(2)
    rot = rope.shape[-2] * 2
    x_rot, x_pass = x[..., :rot], x[..., rot:]
    pairs = x_rot.reshape(length, -1, heads, rot // 2, 2)  # (L, B, H, R/2, 2)
    cos_sin = rope[:length].view(length, -1, 1, rot // 2, 2)  # (L, B|1, 1, R/2, 2)
    even, odd = pairs[..., 0], pairs[..., 1]
    cos, sin = cos_sin[..., 0], cos_sin[..., 1]
    turned = torch.stack([even * cos - odd * sin, odd * cos + even * sin], -1).flatten(3)
    return torch.cat((turned, x_pass), dim=-1)


class RMSNorm(nn.Module):
    def __init__(self, normalized_shape, eps=1e-5, device=None, dtype=None, **kwargs):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(normalized_shape, device=device, dtype=dtype))
        self.eps = eps

    def forward(self, hidden_states: torch.Tensor):
        variance = hidden_states.to(torch.float32).pow(2).mean(-1, keepdim=True)  # statistics in fp32
        normed = hidden_states * torch.rsqrt(variance + self.eps)
        return (self.weight * normed).to(hidden_states.dtype)


class CoreAttention(nn.Module):
    """SDPA as the real torch>=2 path: default 1/sqrt(D) scale; layer scaling and dropout are never applied."""

    def __init__(self, config: ChatGLMConfig, layer_number):
        super().__init__()
        self.layer_number = max(1, layer_number)
        self.num_attention_heads_per_partition = config.num_attention_heads
        self.hidden_size_per_attention_head = config.kv_channels
        self.hidden_size_per_partition = config.kv_channels * config.num_attention_heads
        self.attention_dropout = nn.Dropout(config.attention_dropout)  # parity only (unused by SDPA path)

    def forward(self, query_layer, key_layer, value_layer, attention_mask):
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query_layer, key_layer, value_layer))  # (B, H, S, D)
        if attention_mask is None and q.shape[2] == k.shape[2]:
            ctx = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # no past, no padding
        else:
            # our masks mean True = masked, SDPA's bool mask True = attend; None (a decode step) = see all
            ctx = F.scaled_dot_product_attention(q, k, v, None if attention_mask is None else ~attention_mask)
        ctx = ctx.permute(2, 0, 1, 3)  # (L, B, H, D)
        return ctx.reshape(*ctx.shape[:2], self.hidden_size_per_partition)  # (L, B, H*D)


class SelfAttention(nn.Module):
    def __init__(self, config: ChatGLMConfig, layer_number, device=None):
        super().__init__()
        self.layer_number = max(1, layer_number)
        self.hidden_size_per_attention_head = config.kv_channels
        self.num_attention_heads_per_partition = config.num_attention_heads
        self.projection_size = config.kv_channels * config.num_attention_heads
        self.multi_query_attention = config.multi_query_attention
        groups = config.multi_query_group_num if self.multi_query_attention else config.num_attention_heads
        self.num_multi_query_groups_per_partition = groups
        self.qkv_hidden_size = self.projection_size + 2 * config.kv_channels * groups
        self.query_key_value = nn.Linear(config.hidden_size, self.qkv_hidden_size,
                                         bias=config.add_bias_linear or config.add_qkv_bias)
        self.core_attention = CoreAttention(config, self.layer_number)
        self.dense = nn.Linear(self.projection_size, config.hidden_size, bias=config.add_bias_linear)

    def forward(self, hidden_states, attention_mask, rotary_pos_emb, kv_cache=None, use_cache=True):
        h, g, d = (self.num_attention_heads_per_partition, self.num_multi_query_groups_per_partition,
                   self.hidden_size_per_attention_head)
        mixed = self.query_key_value(hidden_states)  # (L, B, H*D + 2*G*D)
        if self.multi_query_attention:
            q, k, v = mixed.split([h * d, g * d, g * d], dim=-1)  # [all q | all k | all v]
            q, k, v = q.unflatten(-1, (h, d)), k.unflatten(-1, (g, d)), v.unflatten(-1, (g, d))
        else:
            q, k, v = mixed.unflatten(-1, (h, 3 * d)).chunk(3, dim=-1)  # per head [q | k | v]
        if rotary_pos_emb is not None:
            q, k = apply_rotary_pos_emb(q, rotary_pos_emb), apply_rotary_pos_emb(k, rotary_pos_emb)
        if kv_cache is not None:  # a (k, v) tuple or a stacked (2, P, B, G, D) prompt tensor
            past_k, past_v = kv_cache
            k, v = torch.cat((past_k, k), dim=0), torch.cat((past_v, v), dim=0)  # (P+L, B, G, D)
        present = (k, v) if use_cache else None
        if self.multi_query_attention:  # group j serves heads j*H/G .. (j+1)*H/G - 1
            k = k.unsqueeze(-2).expand(-1, -1, -1, h // g, -1).reshape(*k.shape[:2], h, d)
            v = v.unsqueeze(-2).expand(-1, -1, -1, h // g, -1).reshape(*v.shape[:2], h, d)
        context = self.core_attention(q, k, v, attention_mask)
        return self.dense(context), present


class MLP(nn.Module):
    """SwiGLU: one matmul to 2*ffn, silu(first half) * second half, back to hidden."""

    def __init__(self, config: ChatGLMConfig, device=None):
        super().__init__()
        self.add_bias = config.add_bias_linear
        self.dense_h_to_4h = nn.Linear(config.hidden_size, config.ffn_hidden_size * 2, bias=self.add_bias)
        self.dense_4h_to_h = nn.Linear(config.ffn_hidden_size, config.hidden_size, bias=self.add_bias)

    def forward(self, hidden_states):
        gate, up = self.dense_h_to_4h(hidden_states).chunk(2, dim=-1)
        return self.dense_4h_to_h(F.silu(gate) * up)


def _norm(config: ChatGLMConfig):
    cls = RMSNorm if config.rmsnorm else nn.LayerNorm
    return cls(config.hidden_size, eps=config.layernorm_epsilon)


class GLMBlock(nn.Module):
    def __init__(self, config: ChatGLMConfig, layer_number, device=None):
        super().__init__()
        self.layer_number = layer_number
        self.apply_residual_connection_post_layernorm = config.apply_residual_connection_post_layernorm
        self.fp32_residual_connection = config.fp32_residual_connection
        self.input_layernorm = _norm(config)
        self.self_attention = SelfAttention(config, layer_number)
        self.hidden_dropout = config.hidden_dropout
        self.post_attention_layernorm = _norm(config)
        self.mlp = MLP(config)

    def forward(self, hidden_states, attention_mask, rotary_pos_emb, kv_cache=None, use_cache=True):
        normed = self.input_layernorm(hidden_states)  # (L, B, hidden)
        attn, kv_cache = self.self_attention(normed, attention_mask, rotary_pos_emb, kv_cache=kv_cache,
                                             use_cache=use_cache)
        residual = normed if self.apply_residual_connection_post_layernorm else hidden_states
        hidden = residual + F.dropout(attn, p=self.hidden_dropout, training=self.training)
        normed = self.post_attention_layernorm(hidden)
        residual = normed if self.apply_residual_connection_post_layernorm else hidden
        return residual + F.dropout(self.mlp(normed), p=self.hidden_dropout, training=self.training), kv_cache


class GLMTransformer(nn.Module):
    def __init__(self, config: ChatGLMConfig, device=None):
        super().__init__()
        self.fp32_residual_connection = config.fp32_residual_connection
        self.post_layer_norm = config.post_layer_norm
        self.num_layers = config.num_layers
        self.layers = nn.ModuleList([GLMBlock(config, i + 1) for i in range(self.num_layers)])
        if self.post_layer_norm:
            self.final_layernorm = _norm(config)
        self.gradient_checkpointing = False

    def _get_layer(self, layer_number):
        return self.layers[layer_number]

    def forward(self, hidden_states, attention_mask, rotary_pos_emb, kv_caches=None, use_cache=True,
                output_hidden_states=False):
        kv_caches = kv_caches or [None] * self.num_layers
        checkpointing = self.gradient_checkpointing and self.training
        if checkpointing:
            use_cache = False  # as the real code; the past itself is still passed to every layer
        presents = () if use_cache else None
        all_hidden = () if output_hidden_states else None
        for index, layer in enumerate(self.layers):
            if output_hidden_states:
                all_hidden += (hidden_states,)
            args = (hidden_states, attention_mask, rotary_pos_emb, kv_caches[index], use_cache)
            if checkpointing:
                ckpt = getattr(self, "_gradient_checkpointing_func", None)
                hidden_states, kv = (ckpt(layer.__call__, *args) if ckpt is not None else
                                     torch.utils.checkpoint.checkpoint(layer, *args, use_reentrant=False))
            else:
                hidden_states, kv = layer(*args)
            if use_cache:
                presents += (kv,)
        if output_hidden_states:
            all_hidden += (hidden_states,)
        if self.post_layer_norm:
            hidden_states = self.final_layernorm(hidden_states)
        return hidden_states, presents, all_hidden, None


class ChatGLMPreTrainedModel(PreTrainedModel):
    is_parallelizable = False
    supports_gradient_checkpointing = True
    config_class = ChatGLMConfig
    base_model_prefix = "transformer"
    _no_split_modules = ["GLMBlock"]

    def _init_weights(self, module: nn.Module):
        # the real one is a no-op (weights come from the checkpoint); ours makes tiny random models reproducible
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=getattr(self.config, "initializer_range", 0.02))
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (RMSNorm, nn.LayerNorm)):
            nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def get_masks(self, input_ids, past_key_values, padding_mask=None):
        batch_size, seq_length = input_ids.shape
        allowed = torch.ones(batch_size, seq_length, seq_length, device=input_ids.device).tril_()  # (B, L, L)
        past_length = past_key_values[0][0].shape[0] if past_key_values else 0  # P from dim 0 of layer-0 keys
        if past_length:  # every new token sees the whole past
            allowed = torch.cat((torch.ones(batch_size, seq_length, past_length, device=input_ids.device),
                                 allowed), dim=-1)  # (B, L, P+L)
        if padding_mask is not None:
            allowed = allowed * padding_mask.unsqueeze(1)  # padding_mask must be (B, P+L)
        if not past_length and padding_mask is not None:
            allowed -= padding_mask.unsqueeze(-1) - 1  # padded query rows see everything (no NaN rows)
        return (allowed < 0.5).bool().unsqueeze(1)  # (B, 1, L, P+L), True = masked

    def get_position_ids(self, input_ids, device):
        batch_size, seq_length = input_ids.shape
        return torch.arange(seq_length, dtype=torch.long, device=device).unsqueeze(0).repeat(batch_size, 1)


class Embedding(nn.Module):
    def __init__(self, config: ChatGLMConfig, device=None):
        super().__init__()
        self.hidden_size = config.hidden_size
        self.word_embeddings = nn.Embedding(config.padded_vocab_size, self.hidden_size)
        self.fp32_residual_connection = config.fp32_residual_connection

    def forward(self, input_ids):
        embeddings = self.word_embeddings(input_ids).transpose(0, 1).contiguous()  # (L, B, hidden): seq-first
        return embeddings.float() if self.fp32_residual_connection else embeddings


class ChatGLMModel(ChatGLMPreTrainedModel):
    def __init__(self, config: ChatGLMConfig, device=None, empty_init=False):
        # empty_init is accepted for call compatibility and ignored: weights are always initialised
        super().__init__(config)
        self.embedding = Embedding(config)
        self.num_layers = config.num_layers
        self.multi_query_group_num = config.multi_query_group_num
        self.kv_channels = config.kv_channels
        self.seq_length = config.seq_length  # rotary table length: positions >= seq_length raise IndexError
        head_dim = config.kv_channels or config.hidden_size // config.num_attention_heads
        self.rotary_pos_emb = RotaryEmbedding(head_dim // 2, original_impl=config.original_rope,
                                              fp32_theta=getattr(config, "rope_fp32_theta", False))
        self.encoder = GLMTransformer(config)
        self.output_layer = nn.Linear(config.hidden_size, config.padded_vocab_size, bias=False)
        self.pre_seq_len = config.pre_seq_len
        self.prefix_projection = config.prefix_projection
        if self.pre_seq_len is not None:
            for param in self.parameters():  # P-Tuning v2: only the prefix encoder trains
                param.requires_grad = False
            self.prefix_tokens = torch.arange(self.pre_seq_len).long()
            self.prefix_encoder = PrefixEncoder(config)
            self.dropout = nn.Dropout(0.1)
        self.post_init()

    def get_input_embeddings(self):
        return self.embedding.word_embeddings

    def set_input_embeddings(self, value):
        self.embedding.word_embeddings = value

    def get_prompt(self, batch_size, device, dtype=torch.half):
        tokens = self.prefix_tokens.unsqueeze(0).expand(batch_size, -1).to(device)  # (B, P)
        kv = self.prefix_encoder(tokens).type(dtype)
        kv = kv.view(batch_size, self.pre_seq_len, self.num_layers * 2, self.multi_query_group_num,
                     self.kv_channels)  # (B, P, 2*layers, G, D)
        kv = self.dropout(kv)
        return kv.permute([2, 1, 0, 3, 4]).split(2)  # layers x (2, P, B, G, D): [0] = keys, [1] = values

    def forward(self, input_ids, position_ids: Optional[torch.Tensor] = None,
                attention_mask: Optional[torch.BoolTensor] = None,
                full_attention_mask: Optional[torch.BoolTensor] = None, past_key_values=None,
                inputs_embeds: Optional[torch.Tensor] = None, use_cache: Optional[bool] = None,
                output_hidden_states: Optional[bool] = None, return_dict: Optional[bool] = None):
        output_hidden_states = (output_hidden_states if output_hidden_states is not None
                                else self.config.output_hidden_states)
        use_cache = use_cache if use_cache is not None else self.config.use_cache
        return_dict = return_dict if return_dict is not None else getattr(self.config, "return_dict", True)
        batch_size, seq_length = input_ids.shape  # input_ids is required even with inputs_embeds (real quirk)
        if inputs_embeds is None:
            inputs_embeds = self.embedding(input_ids)  # (L, B, hidden); caller-given embeds must be seq-first too
        if self.pre_seq_len is not None:
            if past_key_values is None:
                past_key_values = self.get_prompt(batch_size, input_ids.device, inputs_embeds.dtype)
            if attention_mask is not None:  # the caller's mask covers the real tokens only
                attention_mask = torch.cat([attention_mask.new_ones((batch_size, self.pre_seq_len)),
                                            attention_mask], dim=-1)
        if full_attention_mask is None:
            if (attention_mask is not None and not attention_mask.all()) or (past_key_values and seq_length != 1):
                full_attention_mask = self.get_masks(input_ids, past_key_values, padding_mask=attention_mask)
        rope = self.rotary_pos_emb(self.seq_length)  # (seq_length, D/4, 2)
        # no positions => 0..L-1 whatever the past: a prefix has no positions of its own
        rope = rope[position_ids] if position_ids is not None else rope[None, :seq_length]  # (B|1, L, D/4, 2)
        rope = rope.transpose(0, 1).contiguous()  # (L, B|1, D/4, 2)
        hidden_states, presents, all_hidden, all_attn = self.encoder(
            inputs_embeds, full_attention_mask, rotary_pos_emb=rope, kv_caches=past_key_values,
            use_cache=use_cache, output_hidden_states=output_hidden_states)
        if not return_dict:
            return tuple(t for t in (hidden_states, presents, all_hidden, all_attn) if t is not None)
        return BaseModelOutputWithPast(last_hidden_state=hidden_states, hidden_states=all_hidden,
                                       attentions=all_attn, **{_CACHE_FIELD: presents})


class ChatGLMForConditionalGeneration(ChatGLMPreTrainedModel, GenerationMixin):
    def __init__(self, config: ChatGLMConfig, empty_init=False, device=None):
        super().__init__(config)
        self.max_sequence_length = getattr(config, "max_length", None)
        self.transformer = ChatGLMModel(config)
        self.config = config
        self.quantized = False
        self.post_init()

    def get_input_embeddings(self):
        return self.transformer.embedding.word_embeddings

    # ---- generation: legacy tuple caches, ChatGLM's own kwargs bookkeeping (works on 4.x and 5.x) ----
    @classmethod
    def _supports_default_dynamic_cache(cls):
        return False  # transformers 5: do not hand us a DynamicCache; we keep the tuple layout

    def _prepare_cache_for_generation(self, generation_config, model_kwargs, *args, **kwargs):
        # transformers 5 renames generate(past_key_values=...) to `cache` and refuses tuples; keep the prefix
        if isinstance(model_kwargs.get("cache"), (tuple, list)):
            model_kwargs["past_key_values"] = model_kwargs.pop("cache")
            return None
        return super()._prepare_cache_for_generation(generation_config, model_kwargs, *args, **kwargs)

    def _prepare_position_ids_for_generation(self, inputs_tensor, model_kwargs):
        # transformers 5 would derive positions from the mask; the real code uses 0..L-1 (pads included)
        ids = model_kwargs.get("input_ids")
        ids = ids if ids is not None and ids.shape[1] > 0 else inputs_tensor
        return self.get_position_ids(ids, device=ids.device)

    def _update_model_kwargs_for_generation(self, outputs, model_kwargs, is_encoder_decoder=False,
                                            standardize_cache_format=False, **kwargs):
        model_kwargs["past_key_values"] = getattr(outputs, _CACHE_FIELD, None)
        if model_kwargs.get("attention_mask") is not None:
            mask = model_kwargs["attention_mask"]
            model_kwargs["attention_mask"] = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
        if model_kwargs.get("position_ids") is not None:
            pos = model_kwargs["position_ids"]
            model_kwargs["position_ids"] = torch.cat([pos, pos[..., -1:] + 1], dim=-1)
        model_kwargs["is_first_forward"] = False
        return model_kwargs

    def prepare_inputs_for_generation(self, input_ids, past_key_values=None, attention_mask=None,
                                      position_ids=None, use_cache=None, is_first_forward=True, cache=None,
                                      **kwargs):
        if past_key_values is None and cache is not None:
            if not isinstance(cache, (tuple, list)):
                raise TypeError("ChatGLM takes a tuple of per-layer (k, v) caches, not a transformers Cache")
            past_key_values = cache
        if position_ids is None:
            position_ids = self.get_position_ids(input_ids, device=input_ids.device)
        # the first forward feeds the whole prompt even when a past (a prefix) is given
        if not is_first_forward and past_key_values is not None:
            position_ids = position_ids[..., -1:]
            input_ids = input_ids[:, -1:]
        return {"input_ids": input_ids, "past_key_values": past_key_values, "position_ids": position_ids,
                "attention_mask": attention_mask, "return_last_logit": True, "use_cache": use_cache}

    def forward(self, input_ids: Optional[torch.Tensor] = None, position_ids: Optional[torch.Tensor] = None,
                attention_mask: Optional[torch.Tensor] = None, past_key_values=None,
                inputs_embeds: Optional[torch.Tensor] = None, labels: Optional[torch.Tensor] = None,
                use_cache: Optional[bool] = None, output_attentions: Optional[bool] = None,
                output_hidden_states: Optional[bool] = None, return_dict: Optional[bool] = None,
                return_last_logit: Optional[bool] = False):
        use_cache = use_cache if use_cache is not None else self.config.use_cache
        return_dict = return_dict if return_dict is not None else getattr(self.config, "return_dict", True)
        out = self.transformer(input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask,
                               past_key_values=past_key_values, inputs_embeds=inputs_embeds,
                               use_cache=use_cache, output_hidden_states=output_hidden_states,
                               return_dict=return_dict)
        hidden_states = out[0]  # (L, B, hidden)
        if return_last_logit:
            hidden_states = hidden_states[-1:]
        lm_logits = self.transformer.output_layer(hidden_states).transpose(0, 1).contiguous()  # (B, L, V)
        loss = None
        if labels is not None:
            lm_logits = lm_logits.to(torch.float32)
            shift_logits, shift_labels = lm_logits[..., :-1, :].contiguous(), labels[..., 1:].contiguous()
            loss = F.cross_entropy(shift_logits.view(-1, shift_logits.size(-1)), shift_labels.view(-1),
                                   ignore_index=-100)
            lm_logits, loss = lm_logits.to(hidden_states.dtype), loss.to(hidden_states.dtype)
        if not return_dict:
            output = (lm_logits,) + tuple(out[1:])
            return ((loss,) + output) if loss is not None else output
        return CausalLMOutputWithPast(loss=loss, logits=lm_logits, hidden_states=out.hidden_states,
                                      attentions=out.attentions, **{_CACHE_FIELD: getattr(out, _CACHE_FIELD)})

    @staticmethod
    def _reorder_cache(past, beam_idx):
        # beam search (4.x): batch is dim 1 of every (S, B, G, D) tensor
        return tuple((k.index_select(1, beam_idx.to(k.device)), v.index_select(1, beam_idx.to(v.device)))
                     for k, v in past)
