"""Tiny configs: every size of a config class set small, recognised by common attribute names.

The probe never reads a model's code: it recognises the usual names of each size (``hidden_size``,
``n_embd``, ``d_model``...), sets them to tiny values chosen so that no two sizes are equal, and
varies one size at a time (see ``variations``) so each cache axis can be traced to the size that
moves it. Names not recognised keep the class default; the probe then says what it could not tell.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field

# Role -> attribute names, most common first. The tiny value of each role is in TINY.
ROLES = {
    "hidden": ("hidden_size", "n_embd", "d_model", "n_embed", "embed_dim", "hidden_dim", "model_dim", "dim"),
    "layers": ("num_hidden_layers", "n_layer", "num_layers", "n_layers", "decoder_layers", "num_decoder_layers"),
    "heads": ("num_attention_heads", "n_head", "num_heads", "n_heads", "decoder_attention_heads", "attention_heads",
              "num_decoder_attention_heads"),
    "kv_heads": ("num_key_value_heads", "num_kv_heads", "n_head_kv", "multi_query_group_num", "n_kv_heads",
                 "num_kv_groups", "kv_heads", "num_key_value_groups"),
    "head_dim": ("head_dim", "kv_channels", "attention_head_dim", "d_head", "head_size", "d_kv", "dim_head"),
    "vocab": ("vocab_size", "padded_vocab_size", "n_vocab"),
    "max_positions": ("max_position_embeddings", "n_positions", "n_ctx", "seq_length", "max_seq_len",
                      "max_sequence_length", "max_seq_length"),
}
# Second names of one size, tied to the role's attribute when their defaults are equal (xLSTM keeps
# hidden_size == embedding_dim and num_hidden_layers == num_blocks; its blocks read the second name)
ALIASES = {"hidden": ("embedding_dim",), "layers": ("num_blocks",)}
# Sizes that have no cache axis of their own: set tiny so the model builds fast, never varied.
INTERMEDIATE = ("intermediate_size", "ffn_hidden_size", "n_inner", "ffn_dim", "d_ff", "decoder_ffn_dim",
                "moe_intermediate_size", "shared_expert_intermediate_size", "expert_intermediate_size",
                "mlp_dim", "inner_dim", "ffn_intermediate_size", "dense_intermediate_size", "expert_ffn_hidden_size")
# KV shared by the last N layers (Gemma 3n): the tiny model has too few layers to share any
NO_SHARING = ("num_kv_shared_layers",)
EXPERTS = {("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts"): 4,
           ("num_experts_per_tok", "moe_topk", "moe_k", "num_selected_experts", "experts_per_token",
            "num_experts_per_token"): 2,
           ("n_shared_experts", "num_shared_experts"): 1, ("n_group", "topk_group", "num_expert_group"): 1,
           ("first_k_dense_replace",): 1}
# Multi-head latent attention (DeepSeek-V2/V3 and descendants): what their cache slots are sized by.
LATENT = {"kv_lora_rank": 24, "q_lora_rank": 40, "qk_rope_head_dim": 8, "qk_nope_head_dim": 16, "v_head_dim": 12}
# the other stack of encoder-decoder families (BART: encoder_layers; ProphetNet: num_encoder_layers)
SIDE = re.compile(r"^(?:num_)?(encoder|decoder)_(layers|attention_heads|ffn_dim)$")
# Recurrent / state-space / linear-attention sizes of hybrids: tiny and mutually consistent
# (Mamba-2 needs heads * head dim == expand * hidden: 8 * 16 == 2 * 64).
RECURRENT = {"mamba_n_heads": 8, "n_mamba_heads": 8, "mamba_num_heads": 8, "mamba_d_head": 16, "mamba_head_dim": 16,
             "mamba_headdim": 16, "mamba_expand": 2, "mamba_d_state": 16, "ssm_state_size": 16, "state_size": 16,
             "mamba_n_groups": 1, "n_groups": 1, "linear_num_heads": 4, "linear_head_dim": 16,
             "linear_num_key_heads": 4, "linear_num_value_heads": 4, "linear_key_head_dim": 16,
             "linear_value_head_dim": 16, "attention_head_dim": 32, "mamba_d_ssm": 128}
# Token rows that come grouped (MusicGen's decoder reads batch x num_codebooks rows and sums each
# group's embeddings into one position): one row per position, as the probe's inputs are; the
# cache (one K/V per batch row) is laid out the same whatever the group size
GROUPS = {"num_codebooks": 1}
# partial rotary: at most the tiny head dim's half (GPT-J / CodeGen default 64 > head dim 16)
ROTARY = {"rotary_dim": 8}
LAYER_INDEX_LISTS = ("_layer_indices", "_idxs", "_layer_ids", "_layers_idx")
WINDOWS = ("sliding_window", "attention_window", "local_window_size", "window_size")
PERIODS = {"_period": 2, "_offset": 1}

HIDDEN, LAYERS, HEADS, KV_HEADS, HEAD_DIM, VOCAB, MAX_POS = 64, 2, 4, 2, 16, 256, 256
INTER = 128
WINDOW = 64  # longer than any probe input (prefix + tokens <= 16), so no layer drops positions
SPECIAL_BASE = VOCAB - 16  # special token ids live in [240, 256); random input tokens stay below
TINY = {"hidden": HIDDEN, "layers": LAYERS, "heads": HEADS, "kv_heads": KV_HEADS, "head_dim": HEAD_DIM,
        "vocab": VOCAB, "max_positions": MAX_POS}


@dataclass
class Shrunk:
    """A tiny config as overrides on the class defaults, and which attribute plays which role."""

    overrides: dict  # attribute -> tiny value (nested dicts for sub-configs)
    roles: dict = field(default_factory=dict)  # role -> attribute name found in this config
    windows: dict = field(default_factory=dict)  # sliding-window attributes and their class defaults
    layer_lists: list = field(default_factory=list)  # per-layer lists/patterns resized with the layers
    defaults: dict = field(default_factory=dict)  # the class defaults (top level), for the draft's notes
    ties: dict = field(default_factory=dict)  # attribute -> attribute the code needs equal (MLA head_dim)
    tied_kv: bool = False
    params: set | None = None
    n_layers: int = LAYERS  # KV heads had to equal heads for the tiny model to run


# Where composite (multimodal) configs keep the language model, most common first.
TEXT_SUB_CONFIGS = ("text_config", "language_config", "llm_config", "text_model_config", "decoder_config")


def text_sub_config(defaults: dict, nested: list) -> str | None:
    """The sub-config whose sizes the cache follows: a known text sub-config name, else the only
    nested config with a vocabulary (the one that embeds tokens)."""
    for name in TEXT_SUB_CONFIGS:
        if name in nested:
            return name
    with_vocab = [k for k in nested if any(v in defaults[k] for v in ROLES["vocab"])]
    return with_vocab[0] if len(with_vocab) == 1 else None


def defaults_of(config_class) -> dict:
    """The class defaults as a dict, sub-configs as nested dicts."""
    return config_class().to_dict()


# A validator's demand that names one setting and its one allowed value (Gemma 4 Assistant's defaults
# fail its own validator: "hidden_size_per_layer_input must be 0, got 256")
_MUST_BE = re.compile(r"\b(\w+) must be (-?\d+|True|False|None), got")


def valid_defaults(config_class, given: dict, tries: int = 8) -> tuple[dict, dict]:
    """The defaults (a dict) of a config class built from ``given``, and the settings its validator
    named when the class's own defaults fail it: {attribute: value}, or {sub_config: {attribute: value}}
    for an attribute of a sub-config. Raises the first error when the validator names no fixable value."""
    required: dict = {}
    first = None
    for _ in range(tries):
        kwargs = {**given, **{k: {**given.get(k, {}), **v} if isinstance(v, dict) else v for k, v in required.items()}}
        try:
            return config_class(**kwargs).to_dict(), required
        except Exception as e:  # noqa: BLE001 - fixable only when the message names a setting and its value
            first = first or e
            m = _MUST_BE.search(str(e))
            if not m:
                raise first from None
            name, value = m.group(1), {"True": True, "False": False, "None": None}.get(m.group(2), m.group(2))
            value = int(value) if isinstance(value, str) else value
            subs = getattr(config_class, "sub_configs", {}) or {}
            owner = next((k for k, c in subs.items() if name in getattr(c, "__dataclass_fields__", {})), None)
            # a sub-config typed only as AutoConfig: the language model's (Gemma 4 Assistant's text_config)
            owner = owner or next((k for k in TEXT_SUB_CONFIGS if k in subs), None)
            if name in init_params(config_class) or name in getattr(config_class, "__dataclass_fields__", {}):
                owner = None
            if (owner and required.get(owner, {}).get(name) == value) or (not owner and required.get(name) == value):
                raise first from None  # asked again for what is already set: not fixable this way
            if owner:
                required[owner] = {**required.get(owner, {}), name: value}
            else:
                required[name] = value
    raise first from None


def _first(keys, names):
    return next((n for n in names if n in keys), None)


def _resize_pattern(value, old_n: int, new_n: int):
    """A per-layer list (or pattern string) of length ``old_n`` resized to ``new_n`` keeping every
    distinct entry when it fits (e.g. both 'sliding_attention' and 'full_attention')."""
    items = list(value)
    distinct = list(dict.fromkeys(items))
    # cycle the kinds: with 4 layers each of 2 kinds appears twice (Zamba ties its shared attention
    # block across the attention layers, so it needs two of them)
    out = [distinct[i % len(distinct)] for i in range(new_n)] if len(distinct) <= new_n else items[:new_n]
    return "".join(out) if isinstance(value, str) else out


def init_params(config_class) -> set[str]:
    """The settings a config class's constructor names (empty when it takes only **kwargs)."""
    import inspect

    try:
        ps = inspect.signature(config_class.__init__).parameters
    except (TypeError, ValueError):
        return set()
    return {n for n, p in ps.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and n != "self"}


def shrink(defaults: dict, layers: int = LAYERS, params: set | None = None) -> Shrunk:
    """Tiny overrides for a config's defaults (a dict as ``to_dict`` gives). ``params``: the
    constructor's argument names; a role's attribute is taken among them first (ChatGLM stores
    ``vocab_size`` but takes ``padded_vocab_size``)."""
    keys = set(defaults)
    preferred = keys & params if params else set()
    roles = {role: _first(preferred, names) or _first(keys, names) for role, names in ROLES.items()}
    roles = {r: a for r, a in roles.items() if a is not None and _is_size(defaults.get(a), r)}
    out: dict = {}
    for role, attr in roles.items():
        out[attr] = layers if role == "layers" else TINY[role]
    aliases = [a for role, names in ALIASES.items() if role in roles for a in names
               if a not in out and _is_int(defaults.get(a)) and defaults[a] == defaults[roles[role]]]
    for role, names in ALIASES.items():
        out.update({a: out[roles[role]] for a in names if a in aliases})
    for name in INTERMEDIATE:
        if _is_int(defaults.get(name)):
            out[name] = INTER
    has_experts = any(_is_int(defaults.get(n)) and defaults[n] > 1 for n in next(iter(EXPERTS)))
    for names, value in EXPERTS.items():
        for name in names:
            if _is_int(defaults.get(name)) and defaults[name] > 0:
                out[name] = value
            elif name in defaults and defaults[name] is None and has_experts and value == 2:
                out[name] = value  # experts per token left unset (None) beside a set expert count
    for name in NO_SHARING:
        if _is_int(defaults.get(name)):
            out[name] = 0
    for name, value in defaults.items():  # other vocabularies (byte-group hash tables...): tiny too
        if "vocab" in name and _is_int(value) and value > VOCAB and name not in out:
            out[name] = VOCAB
    for name, value in LATENT.items():
        if _is_int(defaults.get(name)) and defaults[name] > 0:
            out[name] = value
    if _is_int(defaults.get("qk_head_dim")) and "qk_nope_head_dim" in out and "qk_rope_head_dim" in out:
        out["qk_head_dim"] = out["qk_nope_head_dim"] + out["qk_rope_head_dim"]  # stored, not derived (Kimi)
    ties: dict = {}
    for name in ROLES["head_dim"]:  # MLA: the rotary head dim is one of the latent sizes; keep it tied
        tied = [a for a in LATENT if a in out and defaults.get(name) == defaults.get(a)]
        if name in out and tied:
            out[name] = LATENT[tied[0]]
            ties[name], ties[tied[0]] = tied[0], name
    for name, value in defaults.items():  # encoder-decoder families' other stacks
        m = SIDE.match(name)
        if m and _is_int(value) and name not in out:
            out[name] = {"layers": layers, "attention_heads": HEADS, "ffn_dim": INTER}[m.group(2)]
    for name, value in {**RECURRENT, **ROTARY, **GROUPS}.items():
        if _is_int(defaults.get(name)) and name not in out:
            out[name] = value
    hid = roles.get("hidden")
    if hid and _is_int(defaults.get("attention_hidden_size")) and _is_int(defaults.get(hid)):
        ratio = defaults["attention_hidden_size"] / defaults[hid]  # RWKV: 1 x hidden; Zamba-2: 2 x hidden
        if ratio in (0.5, 1, 2, 4):
            out["attention_hidden_size"] = int(HIDDEN * ratio)
    for name, value in defaults.items():  # which layers are attention: at least one, below the layer count
        if name.endswith(LAYER_INDEX_LISTS) and (value is None or isinstance(value, list)) and name not in out:
            if value is None or all(_is_int(v) for v in value):
                out[name] = [layers - 1]
    windows = {}
    for name in WINDOWS:
        if name in keys:
            windows[name] = defaults[name]
            if _is_int(defaults[name]) and defaults[name] > 0:
                out[name] = WINDOW
    for name, value in defaults.items():
        if _is_int(value) and any(name.endswith(suffix) and value > 0 for suffix in PERIODS):
            out[name] = next(v for s, v in PERIODS.items() if name.endswith(s))
    out.update(_token_ids(defaults))
    # Per-layer lists and patterns (layer_types, layers_block_type, "M-M*" strings...) follow the layers.
    old_n = defaults.get(roles.get("layers")) if "layers" in roles else None
    layer_lists = [a for a in aliases if a in ALIASES["layers"]]  # resized with the layers too
    if _is_int(old_n):
        for name, value in defaults.items():
            # lists, and pattern strings such as "M-M*-" (upper case and symbols: never a word like "gelu")
            pattern = isinstance(value, list) or (isinstance(value, str) and value == value.upper())
            if pattern and len(value) == old_n and old_n > 1 and name not in out:
                out[name] = _resize_pattern(value, old_n, layers)
                layer_lists.append(name)
    kinds = out.get("layer_types")
    if defaults.get("rope_parameters") == {} and isinstance(kinds, list) and all(isinstance(k, str) for k in kinds):
        # per-layer-type rotary parameters left empty by the class (Cohere Compass reads one entry per
        # kind and fails on none): the plain default rotary for each kind the tiny model has
        out["rope_parameters"] = {k: {"rope_type": "default", "rope_theta": 10000.0} for k in dict.fromkeys(kinds)}
    # Sub-configs (text_config, vision_config...) shrink the same way.
    for name, value in defaults.items():
        if isinstance(value, dict) and name.endswith("_config") and value:
            out[name] = shrink(value, layers).overrides
    return Shrunk(out, roles, windows, layer_lists, defaults, ties=ties, params=params, n_layers=layers)


def with_layers(shrunk: Shrunk, layers: int) -> dict:
    """The overrides with a different layer count (per-layer lists resized too), keeping any
    adjustment made to the base overrides since (e.g. KV heads tied to heads)."""
    out = shrink(shrunk.defaults, layers, shrunk.params).overrides
    resized = set(shrunk.layer_lists) | {shrunk.roles.get("layers")} | {k for k in out if SIDE.match(k) and k.endswith("layers")}
    out.update({k: v for k, v in shrunk.overrides.items() if k not in resized})
    return out


def _token_ids(defaults: dict) -> dict:
    """Every *_token_id / *_token_index set below the tiny vocab, each a distinct id at its top."""
    out, nxt = {}, SPECIAL_BASE
    for name, value in sorted(defaults.items()):
        if not (name.endswith("_token_id") or name.endswith("_token_index") or name.endswith("_token_ids")):
            continue
        if _is_int(value) or (value is None and name in ("bos_token_id", "eos_token_id")):
            out[name], nxt = nxt, nxt + 1  # bos/eos set even where the class leaves them None (validators ask)
        elif isinstance(value, list) and value and all(_is_int(v) for v in value):
            out[name] = list(range(nxt, nxt + len(value)))
            nxt += len(value)
        if nxt >= VOCAB:
            nxt = SPECIAL_BASE
    return out


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_size(value, role: str) -> bool:
    # kv heads / head dim may default to None (= derived from heads / hidden): still settable
    return _is_int(value) or (value is None and role in ("kv_heads", "head_dim"))


def merged(overrides: dict, **changes) -> dict:
    """A deep copy of ``overrides`` with some top-level attributes changed."""
    out = copy.deepcopy(overrides)
    out.update(changes)
    return out
