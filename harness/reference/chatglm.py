"""Reference ChatGLM-6B (v1): a small causal LM with the cache contract of the hub remote code.

Written from the facts of the public remote code (`ChatGLMForConditionalGeneration` in the
chatglm-6b hub repository), not copied from it. Module and parameter names/shapes are the real ones, so
`real.load_state_dict(ours.state_dict())` works both ways. What matters to a KV-cache prefix:

* cache: tuple over layers of `(k, v)` shaped `[s, b, h, d]`, new keys/values concatenated on
  dim 0 after any past; keys are stored after rotary.
* GLM inputs: every row needs `<bos>` and `[gMASK]` or `[MASK]` (`list.index` -> ValueError).
  Context = tokens before `<bos>`. Positions are 2-D `[b, 2, L]`: row 0 = absolute index for the
  context, the mask token's index for every token from `<bos>` on; row 1 ("block") = 0 for the
  context, then 1, 2, ... Each half of the head dim is rotated by one of the two rows.
* masks `[b, 1, L, S]` bool, True = masked: bidirectional over the context, causal after it.
  The model builds masks/positions only when `past_key_values is None`; with a past and
  `attention_mask=None` it masks nothing at all (a `zeros(1, 1)` mask).
* built-in P-Tuning v2 (`pre_seq_len`): the prefix is position-less (positions come from
  input_ids alone) and always visible (False columns prepended to the mask, also when the caller
  gives a past and a mask). Everything in `transformer` is frozen, `lm_head` is NOT (as real).
* `prepare_inputs_for_generation`: any past means "decoding": the input is cut to its last token.

Deliberate divergences: weights are fp32 (real: fp16 `params_dtype=torch.half`; compare against
`real.float()` on CPU); real `_init_weights` is a no-op over `skip_init` (uninitialised) weights,
ours is normal(0, config.initializer_range, default 0.02) so seeded models are deterministic; no quantization, jit, tokenizer or
chat helpers; `tie_word_embeddings=False` (real: config default True, so a 4.x `from_pretrained`
ties lm_head to the embedding while `from_config` does not); config defaults follow the hub
config.json; `generate()` also runs under transformers 5 (see ChatGLMForConditionalGeneration).
"""

import math

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn
from torch.nn import CrossEntropyLoss, LayerNorm
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
)

try:  # transformers >= 5: PreTrainedModel no longer generates by itself
    from transformers import GenerationMixin
except ImportError:  # pragma: no cover
    GenerationMixin = object

# transformers 5 renamed the output field past_key_values -> cache (old name still reads, with a warning)
_CACHE = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


class ChatGLMConfig(PretrainedConfig):
    model_type = "chatglm"
    attribute_map = {"num_hidden_layers": "num_layers"}  # transformers 5 generate reads num_hidden_layers

    def __init__(self, vocab_size=130528, hidden_size=4096, num_layers=28, num_attention_heads=32,
                 layernorm_epsilon=1e-5, use_cache=True, bos_token_id=130004, eos_token_id=130005,
                 mask_token_id=130000, gmask_token_id=130001, pad_token_id=3, max_sequence_length=2048,
                 inner_hidden_size=16384, position_encoding_2d=True, quantization_bit=0, pre_seq_len=None,
                 prefix_projection=False, tie_word_embeddings=False, initializer_range=0.02, **kwargs):
        # initializer_range (ours): std of the random init; the real code leaves weights uninitialised
        self.initializer_range = initializer_range
        self.vocab_size, self.hidden_size, self.num_layers = vocab_size, hidden_size, num_layers
        self.num_attention_heads, self.layernorm_epsilon = num_attention_heads, layernorm_epsilon
        self.inner_hidden_size, self.max_sequence_length = inner_hidden_size, max_sequence_length
        self.use_cache = use_cache  # set here: transformers 5 no longer keeps it from kwargs
        self.bos_token_id, self.eos_token_id, self.pad_token_id = bos_token_id, eos_token_id, pad_token_id
        self.mask_token_id, self.gmask_token_id = mask_token_id, gmask_token_id
        self.position_encoding_2d, self.quantization_bit = position_encoding_2d, quantization_bit
        self.pre_seq_len, self.prefix_projection = pre_seq_len, prefix_projection
        super().__init__(bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
                         tie_word_embeddings=tie_word_embeddings, **kwargs)


class PrefixEncoder(nn.Module):
    """P-Tuning v2 prefix: ids [b, P] -> [b, P, 2*layers*hidden] (an embedding, or embedding+MLP)."""

    def __init__(self, config):
        super().__init__()
        self.prefix_projection = config.prefix_projection
        out = config.num_layers * config.hidden_size * 2
        if self.prefix_projection:
            self.embedding = nn.Embedding(config.pre_seq_len, config.hidden_size)
            self.trans = nn.Sequential(nn.Linear(config.hidden_size, config.hidden_size), nn.Tanh(),
                                       nn.Linear(config.hidden_size, out))
        else:
            self.embedding = nn.Embedding(config.pre_seq_len, out)

    def forward(self, prefix):
        x = self.embedding(prefix)
        return self.trans(x) if self.prefix_projection else x


def gelu(x):
    # tanh approximation of GELU, written out in the real code's operation order (F.gelu(approximate=
    # "tanh") is the same function but rounds differently, ~4e-6 after one block at these scales)
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * x * (1.0 + 0.044715 * x * x)))


class RotaryEmbedding(nn.Module):
    """cos/sin tables [n, dim] for positions 0..n-1 (rotate-half layout: angles repeated twice)."""

    def __init__(self, dim, base=10000):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
        # the real code keeps inv_freq in fp16: round through half so the angles match it exactly
        self.register_buffer("inv_freq", inv_freq.half().float())

    def forward(self, x, seq_len):
        t = torch.arange(seq_len, device=x.device, dtype=self.inv_freq.dtype)
        emb = torch.outer(t, self.inv_freq).repeat(1, 2)  # [n, dim]
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb_index(q, k, cos, sin, position_id):
    # q, k [sq, b, h, dim]; position_id [sq, b] picks rows of cos/sin -> [sq, b, 1, dim]
    cos, sin = F.embedding(position_id, cos).unsqueeze(2), F.embedding(position_id, sin).unsqueeze(2)
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


class SelfAttention(nn.Module):
    def __init__(self, hidden_size, num_attention_heads, layer_id, hidden_size_per_attention_head=None,
                 bias=True, position_encoding_2d=True):
        super().__init__()
        self.layer_id, self.hidden_size, self.num_attention_heads = layer_id, hidden_size, num_attention_heads
        self.position_encoding_2d = position_encoding_2d
        self.hidden_size_per_attention_head = hidden_size_per_attention_head or hidden_size // num_attention_heads
        inner = num_attention_heads * self.hidden_size_per_attention_head
        # 2-D: half of the head dim rotates with the position, the other half with the block position
        self.rotary_emb = RotaryEmbedding(hidden_size // (num_attention_heads * 2) if position_encoding_2d
                                          else hidden_size // num_attention_heads)
        self.query_key_value = nn.Linear(hidden_size, 3 * inner, bias=bias)
        self.dense = nn.Linear(inner, hidden_size, bias=bias)

    def forward(self, hidden_states, position_ids, attention_mask, layer_id, layer_past=None,
                use_cache=False, output_attentions=False):
        L, b, _ = hidden_states.shape
        h, d = self.num_attention_heads, self.hidden_size_per_attention_head
        # [L, b, 3*h*d] -> [L, b, h, 3d]; each head holds its own q|k|v (that is the weight layout)
        q, k, v = self.query_key_value(hidden_states).view(L, b, h, 3 * d).chunk(3, dim=-1)
        cos, sin = self.rotary_emb(v, int(position_ids.max()) + 1)
        if self.position_encoding_2d:  # position_ids [b, 2, L]
            (q1, q2), (k1, k2) = q.chunk(2, dim=-1), k.chunk(2, dim=-1)
            q1, k1 = apply_rotary_pos_emb_index(q1, k1, cos, sin, position_ids[:, 0, :].t())
            q2, k2 = apply_rotary_pos_emb_index(q2, k2, cos, sin, position_ids[:, 1, :].t())
            q, k = torch.cat([q1, q2], dim=-1), torch.cat([k1, k2], dim=-1)
        else:  # position_ids [b, L]
            q, k = apply_rotary_pos_emb_index(q, k, cos, sin, position_ids.t())
        if layer_past is not None:  # a tuple (k, v) or a stacked [2, P, b, h, d] tensor both index this way
            k, v = torch.cat((layer_past[0], k), dim=0), torch.cat((layer_past[1], v), dim=0)
        present = (k, v) if use_cache else None  # [S, b, h, d], keys post-rotary
        # GLM divides q by an extra (layer_id + 1), fills masked scores with -10000 (not -inf), then
        # multiplies the coefficient back in fp32 before softmax; keep that order for equal numerics
        coeff = float(layer_id + 1)
        q = q / (math.sqrt(d) * coeff)
        scores = torch.matmul(q.permute(1, 2, 0, 3), k.permute(1, 2, 3, 0))  # [b, h, L, S]
        scores = scores.masked_fill(attention_mask, -10000.0)
        probs = F.softmax(scores.float() * coeff, dim=-1).type(scores.dtype)
        ctx = torch.matmul(probs, v.permute(1, 2, 0, 3))  # [b, h, L, d]
        out = self.dense(ctx.permute(2, 0, 1, 3).reshape(L, b, h * d))
        # the real code returns the probabilities viewed as [b*h, L, S]
        return (out, present) + ((probs.reshape(b * h, L, -1),) if output_attentions else ())


class GEGLU(nn.Module):
    """Gated GELU, defined by the real code but used by no layer (its MLP is GLU below)."""

    def forward(self, x):
        x1, x2 = x.chunk(2, dim=-1)
        return x1 * F.gelu(x2)


class GLU(nn.Module):
    """Despite the name: a plain h -> inner -> h MLP with tanh-GELU."""

    def __init__(self, hidden_size, inner_hidden_size=None, layer_id=None, bias=True, activation_func=gelu):
        super().__init__()
        self.layer_id, self.activation_func = layer_id, activation_func
        self.hidden_size, self.inner_hidden_size = hidden_size, inner_hidden_size or 4 * hidden_size
        self.dense_h_to_4h = nn.Linear(hidden_size, self.inner_hidden_size, bias=bias)
        self.dense_4h_to_h = nn.Linear(self.inner_hidden_size, hidden_size, bias=bias)

    def forward(self, hidden_states):
        return self.dense_4h_to_h(self.activation_func(self.dense_h_to_4h(hidden_states)))


class GLMBlock(nn.Module):
    def __init__(self, hidden_size, num_attention_heads, layernorm_epsilon, layer_id, inner_hidden_size=None,
                 hidden_size_per_attention_head=None, layernorm=LayerNorm, use_bias=True, num_layers=28,
                 position_encoding_2d=True):
        super().__init__()
        self.layer_id, self.num_layers, self.position_encoding_2d = layer_id, num_layers, position_encoding_2d
        self.input_layernorm = layernorm(hidden_size, eps=layernorm_epsilon)
        self.attention = SelfAttention(hidden_size, num_attention_heads, layer_id, hidden_size_per_attention_head,
                                       bias=use_bias, position_encoding_2d=position_encoding_2d)
        self.post_attention_layernorm = layernorm(hidden_size, eps=layernorm_epsilon)
        self.mlp = GLU(hidden_size, inner_hidden_size, layer_id=layer_id, bias=use_bias)

    def forward(self, hidden_states, position_ids, attention_mask, layer_id, layer_past=None,
                use_cache=False, output_attentions=False):
        # GLM residual: the skip branch is the *normalised* input scaled by alpha = sqrt(2 * num_layers)
        alpha = (2 * self.num_layers) ** 0.5
        attn_in = self.input_layernorm(hidden_states)
        attn_out, *rest = self.attention(attn_in, position_ids, attention_mask, layer_id, layer_past,
                                         use_cache, output_attentions)
        mlp_in = self.post_attention_layernorm(attn_in * alpha + attn_out)
        out = mlp_in * alpha + self.mlp(mlp_in)
        return (out,) + tuple(rest if use_cache else rest[1:])  # (hidden, [present], [probs])


class ChatGLMPreTrainedModel(PreTrainedModel):
    config_class = ChatGLMConfig
    base_model_prefix = "transformer"
    supports_gradient_checkpointing = True
    is_parallelizable = False
    _no_split_modules = ["GLMBlock"]

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=getattr(self.config, "initializer_range", 0.02))
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def _mask_positions(self, seqs):
        """Per row: index of [gMASK] if present, else of [MASK] (ValueError if neither), and gMASK-ness."""
        mask, gmask = self.config.mask_token_id, self.config.gmask_token_id
        use_gmasks = [gmask in seq for seq in seqs]
        return [seq.index(gmask if g else mask) for seq, g in zip(seqs, use_gmasks)], use_gmasks

    def get_masks(self, input_ids, device):
        """[b, 1, L, L] bool, True = masked: causal, except that every row sees the whole context."""
        b, L = input_ids.shape
        context_lengths = [seq.tolist().index(self.config.bos_token_id) for seq in input_ids]
        keep = torch.ones(b, L, L, device=device).tril()
        for i, c in enumerate(context_lengths):
            keep[i, :, :c] = 1
        return (keep < 0.5).unsqueeze(1)

    def get_position_ids(self, input_ids, mask_positions, device, use_gmasks=None):
        b, L = input_ids.shape
        use_gmasks = use_gmasks if use_gmasks is not None else [False] * b
        context_lengths = [seq.tolist().index(self.config.bos_token_id) for seq in input_ids]
        pos = torch.arange(L, dtype=torch.long, device=device).unsqueeze(0).repeat(b, 1)
        if self.config.position_encoding_2d:  # [b, 2, L]
            block = torch.zeros(b, L, dtype=torch.long, device=device)
            for i, c in enumerate(context_lengths):
                pos[i, c:] = mask_positions[i]
                block[i, c:] = torch.arange(1, L - c + 1, device=device)
            return torch.stack((pos, block), dim=1)
        for i, c in enumerate(context_lengths):  # 1-D: only [MASK] rows pin the positions
            if not use_gmasks[i]:
                pos[i, c:] = mask_positions[i]
        return pos


class ChatGLMModel(ChatGLMPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.max_sequence_length, self.hidden_size = config.max_sequence_length, config.hidden_size
        self.num_attention_heads, self.num_layers = config.num_attention_heads, config.num_layers
        self.position_encoding_2d, self.pre_seq_len = config.position_encoding_2d, config.pre_seq_len
        self.prefix_projection = config.prefix_projection
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.gradient_checkpointing = False
        self.layers = nn.ModuleList([
            # quirk kept: num_layers is not passed, so alpha = sqrt(2 * 28) whatever config.num_layers is
            GLMBlock(config.hidden_size, config.num_attention_heads, config.layernorm_epsilon, i,
                     inner_hidden_size=config.inner_hidden_size, position_encoding_2d=config.position_encoding_2d)
            for i in range(config.num_layers)])
        self.final_layernorm = LayerNorm(config.hidden_size, eps=config.layernorm_epsilon)
        if self.pre_seq_len is not None:
            for p in self.parameters():  # P-Tuning v2: freeze this module (lm_head lives outside it)
                p.requires_grad = False
            self.prefix_tokens = torch.arange(self.pre_seq_len).long()
            self.prefix_encoder = PrefixEncoder(config)
            self.dropout = nn.Dropout(0.1)
        self.post_init()

    def get_input_embeddings(self):
        return self.word_embeddings

    def set_input_embeddings(self, new_embeddings):
        self.word_embeddings = new_embeddings

    def get_prompt(self, batch_size, device, dtype=torch.half):
        """Per layer a stacked [2, P, b, h, d] (k, v) tensor; the prefix keys get no rotary."""
        ids = self.prefix_tokens.unsqueeze(0).expand(batch_size, -1).to(device)
        kv = self.prefix_encoder(ids).type(dtype).view(batch_size, self.pre_seq_len, self.num_layers * 2,
                                                       self.num_attention_heads,
                                                       self.hidden_size // self.num_attention_heads)
        return self.dropout(kv).permute([2, 1, 0, 3, 4]).split(2)  # layers x [2, P, b, h, d]

    def forward(self, input_ids=None, position_ids=None, attention_mask=None, past_key_values=None,
                inputs_embeds=None, use_cache=None, output_attentions=None, output_hidden_states=None,
                return_dict=None):
        cfg = self.config
        output_attentions = output_attentions if output_attentions is not None else cfg.output_attentions
        output_hidden_states = output_hidden_states if output_hidden_states is not None else cfg.output_hidden_states
        use_cache = use_cache if use_cache is not None else cfg.use_cache
        return_dict = return_dict if return_dict is not None else cfg.return_dict
        if self.gradient_checkpointing and self.training:
            use_cache = False
        if input_ids is not None and inputs_embeds is not None:
            raise ValueError("You cannot specify both input_ids and inputs_embeds at the same time")
        if input_ids is None and inputs_embeds is None:
            raise ValueError("You have to specify either input_ids or inputs_embeds")
        batch_size, seq_length = (input_ids if input_ids is not None else inputs_embeds).shape[:2]
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)

        # masks/positions (and the built-in prefix) only when there is no past: a caller with a past
        # must pass them, else every query sees every key (below) and positions are missing
        if past_key_values is None:
            if self.pre_seq_len is not None:
                past_key_values = self.get_prompt(batch_size, inputs_embeds.device, inputs_embeds.dtype)
            else:
                past_key_values = (None,) * len(self.layers)
            if attention_mask is None:
                attention_mask = self.get_masks(input_ids, device=input_ids.device)
            if position_ids is None:
                mask_positions, use_gmasks = self._mask_positions(input_ids.tolist())
                position_ids = self.get_position_ids(input_ids, mask_positions, input_ids.device, use_gmasks)
        if self.pre_seq_len is not None and attention_mask is not None:  # prefix columns: always visible
            prefix_mask = torch.zeros(batch_size, 1, seq_length, self.pre_seq_len, dtype=torch.bool,
                                      device=attention_mask.device)
            attention_mask = torch.cat((prefix_mask, attention_mask), dim=3)

        hidden_states = inputs_embeds.transpose(0, 1)  # [L, b, H]: the whole stack is sequence-first
        if attention_mask is None:  # quirk: a past without a mask = no masking at all
            attention_mask = torch.zeros(1, 1, dtype=torch.bool, device=hidden_states.device)
        else:
            attention_mask = attention_mask.to(hidden_states.device)

        presents = () if use_cache else None
        all_attn = () if output_attentions else None
        all_hidden = () if output_hidden_states else None
        for i, layer in enumerate(self.layers):
            if output_hidden_states:
                all_hidden += (hidden_states,)
            args = (hidden_states, position_ids, attention_mask, torch.tensor(i), past_key_values[i],
                    use_cache, output_attentions)
            if self.gradient_checkpointing and self.training:
                # as real: reentrant checkpoint, the layer past passed along (prefix kept)
                ret = torch.utils.checkpoint.checkpoint(layer, *args, use_reentrant=True)
            else:
                ret = layer(*args)
            hidden_states = ret[0]
            if use_cache:
                presents += (ret[1],)
            if output_attentions:
                all_attn += (ret[2 if use_cache else 1],)
        hidden_states = self.final_layernorm(hidden_states)
        if output_hidden_states:
            all_hidden += (hidden_states,)
        if not return_dict:
            return tuple(v for v in (hidden_states, presents, all_hidden, all_attn) if v is not None)
        return BaseModelOutputWithPast(last_hidden_state=hidden_states, hidden_states=all_hidden,
                                       attentions=all_attn, **{_CACHE: presents})


class ChatGLMForConditionalGeneration(ChatGLMPreTrainedModel, GenerationMixin):
    """ChatGLM-6B with its LM head and the real generation hooks.

    transformers 5 `generate()` differs from 4.x; what we do so that greedy generation works there:
    no DynamicCache is created (`_supports_default_dynamic_cache` -> False), no 1-D positions are
    injected (`_prepare_position_ids_for_generation` -> None, so positions come from input_ids as
    under 4.x), and our own `_update_model_kwargs_for_generation` moves the tuple cache forward
    under whichever name generate uses (`cache` in 5.x, `past_key_values` in 4.x).
    """

    def __init__(self, config):
        super().__init__(config)
        self.max_sequence_length, self.position_encoding_2d = config.max_sequence_length, config.position_encoding_2d
        self.transformer = ChatGLMModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.quantized = False
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def forward(self, input_ids=None, position_ids=None, attention_mask=None, past_key_values=None,
                inputs_embeds=None, labels=None, use_cache=None, output_attentions=None,
                output_hidden_states=None, return_dict=None):
        use_cache = use_cache if use_cache is not None else self.config.use_cache
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        out = self.transformer(input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask,
                               past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache,
                               output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                               return_dict=return_dict)
        hidden_states = out[0]
        logits = self.lm_head(hidden_states).permute(1, 0, 2).contiguous()  # [b, L, V]
        loss = None
        if labels is not None:  # shifted next-token loss, computed in fp32
            logits = logits.float()
            loss = CrossEntropyLoss(ignore_index=-100)(logits[..., :-1, :].reshape(-1, logits.size(-1)),
                                                       labels[..., 1:].reshape(-1))
            logits, loss = logits.to(hidden_states.dtype), loss.to(hidden_states.dtype)
        if not return_dict:
            output = (logits,) + tuple(out[1:])
            return ((loss,) + output) if loss is not None else output
        return CausalLMOutputWithPast(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                      attentions=out.attentions, **{_CACHE: out.get(_CACHE)})

    # ---- generation -------------------------------------------------------------------------------
    @classmethod
    def _supports_default_dynamic_cache(cls):
        return False  # transformers 5: our cache is the legacy tuple, do not pre-build a DynamicCache

    def _prepare_position_ids_for_generation(self, inputs_tensor, model_kwargs):
        return None  # transformers 5 would inject arange positions; GLM computes its own from input_ids

    def _update_model_kwargs_for_generation(self, outputs, model_kwargs, is_encoder_decoder=False, **kwargs):
        model_kwargs[_CACHE] = outputs.get(_CACHE)
        mask = model_kwargs.get("attention_mask")
        if mask is not None and mask.dtype == torch.bool:  # only a 4-D bool mask is carried forward
            mask = torch.cat([mask, mask.new_ones((*mask.shape[:3], 1))], dim=3)  # old rows: new column masked
            new_row = mask[:, :, -1:].clone()
            new_row[..., -1] = False  # the new token sees what the last one saw, plus itself
            model_kwargs["attention_mask"] = torch.cat([mask, new_row], dim=2)
        pos = model_kwargs.get("position_ids")
        if pos is not None:  # same position (the mask's), block position + 1
            new = pos[..., -1:].clone()
            if new.dim() == 3:
                new[:, 1, :] += 1
            model_kwargs["position_ids"] = torch.cat([pos, new], dim=-1)
        return model_kwargs

    def prepare_inputs_for_generation(self, input_ids, past=None, past_key_values=None, attention_mask=None,
                                      position_ids=None, **kwargs):
        past = past if past is not None else past_key_values if past_key_values is not None else kwargs.get("cache")
        seqs = input_ids.tolist()
        mask_positions, use_gmasks = self._mask_positions(seqs)
        if past is not None:
            # quirk: any past means "decoding": only the last token is fed (a prefix passed through
            # generate(past_key_values=...) silently truncates the prompt)
            attention_mask = attention_mask[:, :, -1:] if (
                attention_mask is not None and attention_mask.dtype == torch.bool) else None
            if position_ids is not None:
                position_ids = position_ids[..., -1:]
            else:
                seq_length = input_ids.shape[1]
                context_lengths = [seq.index(self.config.bos_token_id) for seq in seqs]
                rows = ([[m, seq_length - c] for m, c in zip(mask_positions, context_lengths)]
                        if self.position_encoding_2d else mask_positions)
                position_ids = torch.tensor(rows, dtype=torch.long, device=input_ids.device).unsqueeze(-1)
            return {"input_ids": input_ids[:, -1:], "past_key_values": past, "position_ids": position_ids,
                    "attention_mask": attention_mask}
        if attention_mask is not None and attention_mask.dtype != torch.bool:
            attention_mask = None  # a 2-D padding mask is dropped (real: warning)
        if attention_mask is None:
            attention_mask = self.get_masks(input_ids, device=input_ids.device)
        if position_ids is None:
            position_ids = self.get_position_ids(input_ids, mask_positions, input_ids.device, use_gmasks)
        return {"input_ids": input_ids, "past_key_values": past, "position_ids": position_ids,
                "attention_mask": attention_mask}

    @staticmethod
    def _reorder_cache(past, beam_idx):
        return tuple((k.index_select(1, beam_idx.to(k.device)), v.index_select(1, beam_idx.to(v.device)))
                     for k, v in past)
