"""Cache layout inference: run a tiny model, vary one size at a time, see which cache axis moves.

Every size of the base tiny config is distinct from every other (batch 2, sequence 5, KV heads 2,
heads 4, head dim 16, layers 2), and each variation changes exactly one of them, so an axis of the
returned K (or V) tensor is named by the variation that moves it: batch -> ``b``, sequence -> ``s``
(the concat axis), a head-dim size -> ``d``, the remaining one -> ``h``. Which *config attribute*
gives a size is found the same way: the attribute whose change moves the axis, and whose value
equals it.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch

from . import shrink as S

BATCH, SEQ = 2, 5  # base input; variations use 3 and 7
NEW_BATCH, NEW_SEQ = 3, 7


class ProbeError(RuntimeError):
    """The probe cannot tell something; the message says what and why."""


class NotApplicable(RuntimeError):
    """The model has no attention KV cache a prefix could go into; the message says why."""


class Hybrid(NotApplicable):
    """Some layers cache attention K/V, others recurrent state: which are which is recorded."""

    def __init__(self, message: str, attention_layers: list, total_layers: int, layer_kinds: list, model=None):
        super().__init__(message)
        self.attention_layers, self.total_layers, self.layer_kinds = attention_layers, total_layers, layer_kinds
        self.model = model  # the tiny model, for measuring a prefix on the attention layers alone


@dataclass
class Builder:
    """How to build a tiny model: a config class, a model class, and the defaults the sizes are
    shrunk from (the class defaults, or a remote folder's config.json)."""

    config_class: type
    model_class: type
    defaults: dict
    fixed: dict = field(default_factory=dict)  # settings every build needs (remote code: fp32...)
    base: dict = field(default_factory=dict)  # a config.json's non-size settings, under the overrides
    # token ids every input row must hold (ChatGLM-6B: [gMASK] <bos>), as config attribute names,
    # inserted at ``insert_at`` of each row; found by _needs_tokens when a plain run fails
    inserts: tuple = ()
    insert_at: int = 0
    # a composite config (multimodal): the sizes varied live in this sub-config (text_config), the
    # overrides are its settings, and ``outer`` the tiny settings of the rest (other sub-configs shrunk)
    sub: str | None = None
    outer: dict = field(default_factory=dict)
    # settings the config's own validator demands (shrink.valid_defaults), merged over every build
    required: dict = field(default_factory=dict)

    def run(self, model, batch: int, seq: int, vocab_limit: int, seed: int = 0):
        """One forward with a cache on random rows that hold the required tokens."""
        ids = [getattr(self.sizes_of(model.config), a) for a in self.inserts]
        return run_forward(model, batch, seq, vocab_limit, seed, ids, self.insert_at)

    def settings(self, overrides: dict) -> dict:
        """The config's keyword arguments for these (sub-config) overrides."""
        if self.sub:
            out = {**self.base, **self.outer, self.sub: overrides, **self.fixed}
        else:
            out = {**self.base, **overrides, **self.fixed}
        for k, v in self.required.items():  # a sub-config's demanded settings join its shrunk ones
            out[k] = {**(out.get(k) or {}), **v} if isinstance(v, dict) else v
        return out

    def sizes_of(self, config):
        """The config object the sizes are read from: the sub-config of a composite one."""
        return getattr(config, self.sub) if self.sub else config

    def build(self, overrides: dict, seed: int = 0):
        config = self.config_class(**self.settings(overrides))
        torch.manual_seed(seed)
        model = self.model_class(config)
        return model.float().eval(), config


@dataclass
class Observation:
    """One forward with ``use_cache=True``: the container and each layer's K/V shapes."""

    container: str
    cache_type: str
    keys: list  # per cache layer: K shape (tuple) or None for a layer without attention K/V
    values: list
    wrapped: str | None = None  # e.g. EncoderDecoderCache: the self-attention cache inside was read


def run_forward(model, batch: int, seq: int, vocab_limit: int, seed: int = 0, inserts=(), insert_at: int = 0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_limit, (batch, seq), generator=gen)  # [batch, seq]
    if inserts:  # the same tokens at the same place of every row (harness.core.inputs does the same)
        at = insert_at if insert_at >= 0 else seq + insert_at
        ids[:, at:at + len(inserts)] = torch.tensor(inserts)
    mask = torch.ones_like(ids)
    with torch.no_grad():
        try:
            return model(input_ids=ids, attention_mask=mask, use_cache=True)
        except Exception as e:  # noqa: BLE001 - a forward without attention_mask, or one that takes only
            # its own mask form (ChatGLM-6B: 4-D boolean): the cache's shapes need no mask, so run without
            try:
                return model(input_ids=ids, use_cache=True)
            except Exception:  # noqa: BLE001 - not the mask: the first error says what is wrong
                raise e from None


def returned(outputs):
    for key in ("cache", "past_key_values", "mems"):
        value = outputs.get(key) if hasattr(outputs, "get") else getattr(outputs, key, None)
        if value is not None:
            return value
    return None


def _is_kv(t) -> bool:
    return isinstance(t, torch.Tensor) and t.dim() >= 3 and t.numel() > 0


def observe(outputs) -> Observation:
    cache = returned(outputs)
    if cache is None:
        raise NotApplicable("the forward returns no cache with use_cache=True (no attention KV cache: "
                            "recurrent or state-space model, or attention state kept internally)")
    wrapped = None
    inner = getattr(cache, "self_attention_cache", None)
    if inner is not None:  # EncoderDecoderCache: a decoder-only run fills the self-attention part
        wrapped, cache = type(cache).__name__, inner
    layers = getattr(cache, "layers", None)
    if layers is not None and not isinstance(cache, (tuple, list)):
        keys, values = [], []
        for layer in layers:
            k, v = getattr(layer, "keys", None), getattr(layer, "values", None)
            ok = _is_kv(k) and _is_kv(v)
            keys.append(tuple(k.shape) if ok else None)
            values.append(tuple(v.shape) if ok else None)
        return Observation("transformers_cache", type(cache).__name__, keys, values, wrapped)
    if isinstance(cache, (tuple, list)):
        keys, values, kinds = [], [], set()
        for item in cache:
            if isinstance(item, torch.Tensor) and item.dim() >= 4 and item.shape[0] == 2:
                kinds.add("stacked")
                keys.append(tuple(item[0].shape)), values.append(tuple(item[1].shape))
            elif isinstance(item, (tuple, list)) and len(item) >= 2 and _is_kv(item[0]) and _is_kv(item[1]):
                kinds.add("tuples")
                keys.append(tuple(item[0].shape)), values.append(tuple(item[1].shape))
            else:
                keys.append(None), values.append(None)
        if len(kinds) > 1:
            raise ProbeError("the cache mixes stacked [2, ...] tensors and (k, v) pairs across layers")
        if not kinds:
            raise NotApplicable(f"the returned cache ({type(cache).__name__} of {len(cache)} entries) holds no "
                                f"(k, v) pairs: no attention KV cache")
        return Observation(kinds.pop(), type(cache).__name__, keys, values)
    if hasattr(cache, "key_cache"):  # cache objects of transformers 4.36 - 4.55
        keys = [tuple(k.shape) if _is_kv(k) else None for k in cache.key_cache]
        values = [tuple(v.shape) if _is_kv(v) else None for v in cache.value_cache]
        return Observation("transformers_cache", type(cache).__name__, keys, values, wrapped)
    tensors = [n for n, v in vars(cache).items() if isinstance(v, torch.Tensor)] if hasattr(cache, "__dict__") else []
    raise NotApplicable(f"the forward returns a {type(cache).__name__} ({', '.join(tensors) or 'no tensors'}) "
                        f"with no per-layer keys/values: no attention KV cache")


def cache_argument(model) -> str:
    params = inspect.signature(model.forward).parameters
    for name in ("cache", "past_key_values"):
        if name in params:
            return name
    raise ProbeError(f"{type(model).__name__}.forward takes neither cache= nor past_key_values= "
                     f"(its arguments: {', '.join(params)})")


@dataclass
class KVInference:
    """What the probe read off the cache; expressions are over the tiny config."""

    layout: list  # e.g. ["b", "h", "s", "d"]
    concat_axis: str
    layers: list  # expressions, first that applies
    heads: list
    head_dim: list  # K's
    v_head_dim: list  # V's (differs from K's for MLA)
    container: str
    argument: str
    cache_type: str
    attention_layers: list  # cache layer indices that hold K/V
    total_layers: int
    k_shape: tuple  # base K shape of the first attention layer
    v_shape: tuple
    notes: list = field(default_factory=list)
    wrapped: str | None = None
    inserts: tuple = ()  # token attributes every row must hold (inputs.insert_tokens), and where
    insert_at: int = 0


def _repairs(shrunk: S.Shrunk):
    """(what, overrides, layers) to try when the tiny config does not build or run, mildest first,
    each on top of the ones before. Validators and code often tie sizes together in ways a name
    cannot tell."""
    r, o, layers, done = shrunk.roles, dict(shrunk.overrides), None, []
    if r.get("kv_heads") and r.get("heads") and o[r["kv_heads"]] != o[r["heads"]]:
        o = S.merged(o, **{r["kv_heads"]: o[r["heads"]]})
        done.append(f"{r['kv_heads']} = {r['heads']}")
        yield ", ".join(done), o, layers
    unset = {k: v for names, v in S.EXPERTS.items() for k in names if k in o or shrunk.defaults.get(k, 0) is None}
    unset = {k: v for k, v in unset.items() if k not in o}
    if unset:  # expert counts the class leaves None although its code builds experts (MoE by construction)
        o = S.merged(o, **unset)
        done.append(f"experts set ({', '.join(unset)})")
        yield ", ".join(done), o, layers
    per_tok = [k for k in ("num_experts_per_tok", "moe_topk", "moe_k", "experts_per_token", "num_experts_per_token")
               if k in o]
    if per_tok:
        o = S.merged(o, **{k: 1 for k in per_tok})
        done.append("1 expert per token")
        yield ", ".join(done), o, layers
    if "layers" in r:  # a layer pattern may put attention only every few layers
        more = S.with_layers(shrunk, 4)
        more.update({k: v for k, v in o.items() if k not in shrunk.layer_lists and k != r["layers"]})
        o, layers = more, 4
        done.append("4 layers")
        yield ", ".join(done), o, layers
    if r.get("heads") and r.get("head_dim") and o.get(r["head_dim"]):  # heads x head dim == 2 x hidden (Mamba-2)
        yield ", ".join(done + [f"{r['heads']} doubled"]), S.merged(o, **{r["heads"]: 2 * o[r["heads"]]}), layers
    hid = r.get("hidden")
    if hid and o.get(hid):  # a size rounded up to a multiple of 64 from a fraction of hidden (xLSTM's qk_dim)
        twice = {a: 2 * o[hid] for a in (hid, *S.ALIASES["hidden"]) if o.get(a) == o[hid]}
        yield ", ".join(done + [f"{hid} doubled"]), S.merged(o, **twice), layers


def _build_base(builder: Builder, shrunk: S.Shrunk, vocab_limit: int, notes: list):
    """The base model and its observation, repairing the tiny config if it fails (noted). A config
    that builds only at its class-default sizes still gives the n/a / hybrid verdict."""
    try:
        model, _ = builder.build(shrunk.overrides)
        return model, observe(builder.run(model, BATCH, SEQ, vocab_limit))
    except NotApplicable:
        raise
    except Exception as e:  # noqa: BLE001
        first = e
        if "only contain LinearAttention layers" in str(e):  # transformers' cache: no attention layer at all
            raise NotApplicable(f"no layer of the model caches attention K/V ({' '.join(str(e).split())[:200]})") from None
    why = f"{type(first).__name__}: {' '.join(str(first).split())[:160]}"
    for inserts, at in _token_rules(shrunk):
        builder.inserts, builder.insert_at = inserts, at
        try:
            model, _ = builder.build(shrunk.overrides)
            ob = observe(builder.run(model, BATCH, SEQ, vocab_limit))
        except NotApplicable:
            raise
        except Exception:  # noqa: BLE001 - not these tokens: try the next rule
            continue
        notes.append(f"every input row must hold {list(inserts)} at index {at} (inputs.insert_tokens): random "
                     f"rows failed ({why})")
        return model, ob
    builder.inserts, builder.insert_at = (), 0
    for what, overrides, layers in _repairs(shrunk):
        try:
            model, _ = builder.build(overrides)
            ob = observe(builder.run(model, BATCH, SEQ, vocab_limit))
        except NotApplicable:
            raise
        except Exception:  # noqa: BLE001 - try the next repair
            continue
        shrunk.overrides = overrides
        if layers:
            shrunk.n_layers = layers
        if f"= {shrunk.roles.get('heads')}" in what:
            shrunk.tied_kv = True
        notes.append(f"tiny config repaired ({what}): the first try failed ({why})")
        return model, ob
    # last resort, for the verdict only: the class-default sizes with few layers and a tiny vocab
    minimal = {a: v for a, v in shrunk.overrides.items() if a in (shrunk.roles.get("layers"), shrunk.roles.get("vocab"))
               or a.endswith(("_token_id", "_token_index"))}
    if _default_params(shrunk) > 3e8:  # too big to build on a shared CPU box: no verdict rather than an OOM kill
        raise first from None
    try:
        model, _ = builder.build(minimal)
        ob = observe(builder.run(model, BATCH, SEQ, vocab_limit))
    except NotApplicable:
        raise
    except Exception:  # noqa: BLE001
        raise first from None
    if any(k is not None for k in ob.keys):
        raise ProbeError(f"the tiny config does not build or run ({why}); only the class-default sizes do, too "
                         f"large to vary one at a time")
    raise NotApplicable(f"the {ob.cache_type} returned holds no attention K/V in any layer (class-default sizes; "
                        f"the tiny config failed: {why})")


def _holds_state(layer) -> bool:
    """A cache layer that keeps recurrent / convolution state (transformers' linear-attention layers)."""
    flags = ("is_conv_states_initialized", "is_recurrent_states_initialized")  # per state index, after a forward
    return any(any((getattr(layer, a, None) or {}).values()) for a in flags)


def _state_beside_layers(cache) -> list[str]:
    """Attributes of a cache object other than its K/V layers that hold tensors (recurrent state)."""
    def has_tensor(v, depth=0):
        if isinstance(v, torch.Tensor):
            return v.numel() > 0
        if isinstance(v, (list, tuple)) and depth < 2:
            return any(has_tensor(x, depth + 1) for x in v)
        return False

    if not hasattr(cache, "__dict__") or isinstance(cache, (tuple, list)):
        return []
    return [n for n, v in vars(cache).items() if n not in ("layers", "key_cache", "value_cache") and has_tensor(v)]


def _token_rules(shrunk: S.Shrunk):
    """(token attributes, index) for models whose code looks for special tokens in every row (a
    GLM-style [gMASK] <bos> marking where generation starts): each mask-like token id, followed by
    <bos> where the config has one, at the start of the row or at its end."""
    ids = [a for a, v in shrunk.overrides.items() if a.endswith("_token_id") and isinstance(v, int)]
    masks = sorted(a for a in ids if "mask" in a)  # gmask_token_id before mask_token_id
    bos = ["bos_token_id"] if "bos_token_id" in ids else []
    for m in masks:
        for tokens in ([m, *bos], [m]):
            for at in (0, -len(tokens)):
                yield tuple(tokens), at


def _default_params(shrunk: S.Shrunk) -> float:
    """A rough parameter count of the class-default sizes with the tiny layer count (unknown: huge)."""
    d, r = shrunk.defaults, shrunk.roles
    hidden = d.get(r.get("hidden")) if r.get("hidden") else None
    if not _int(hidden):
        return float("inf")
    inter = max([d[k] for k in S.INTERMEDIATE if _int(d.get(k))] or [4 * hidden])
    experts = max([d[k] for names in S.EXPERTS for k in names[:1] if _int(d.get(k))] or [1])
    return shrunk.n_layers * (4 * hidden * hidden + 3 * hidden * inter * experts)


def _variations(shrunk: S.Shrunk) -> list[tuple[str, dict]]:
    """(name, overrides) for every size the config lets us vary; inputs vary separately."""
    r, base = shrunk.roles, shrunk.overrides
    out = []
    if "layers" in r:
        out.append(("layers", S.with_layers(shrunk, shrunk.n_layers + 1)))
    if "heads" in r:
        change = {r["heads"]: S.HEADS * 2}
        if "hidden" in r:
            change[r["hidden"]] = S.HIDDEN * 2  # keep hidden / heads = 16: only the head count moves
            change.update(_follow_hidden(base, 2))
        if shrunk.tied_kv:
            change[r["kv_heads"]] = S.HEADS * 2
        out.append(("heads", S.merged(base, **change)))
    if "kv_heads" in r:
        out.append(("kv_heads", S.merged(base, **{r["kv_heads"]: 1})))
    head_dim_attrs = [r["head_dim"]] if "head_dim" in r else []
    head_dim_attrs += [a for a in S.ROLES["head_dim"] if _int(base.get(a)) and a not in head_dim_attrs]
    head_dim_attrs += [a for a in ("kv_lora_rank", "qk_rope_head_dim", "v_head_dim", "qk_nope_head_dim") if a in base]
    for attr in head_dim_attrs:
        change = {attr: base[attr] // 2}
        if attr in shrunk.ties:  # the code needs both equal (MLA: head_dim is the rotary part)
            change[shrunk.ties[attr]] = base[attr] // 2
        out.append((f"attr:{attr}", S.merged(base, **change)))
    if "hidden" in r and "heads" in r:
        out.append(("hidden", S.merged(base, **{r["hidden"]: S.HIDDEN // 2, **_follow_hidden(base, 0.5)})))
        if head_dim_attrs:  # hidden and head dim together, for code that needs them consistent
            both = {r["hidden"]: S.HIDDEN // 2, **{a: base[a] // 2 for a in head_dim_attrs[:1]}, **_follow_hidden(base, 0.5)}
            out.append(("hidden+attr", S.merged(base, **both)))
    return out


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


# Recurrent sizes tied to the hidden size (Mamba-2: heads * head dim == expand * hidden; Zamba-2's
# attention width is 2 * hidden): they follow a hidden-size change, so only the attention axes move.
_HIDDEN_FOLLOWERS = ("mamba_n_heads", "n_mamba_heads", "mamba_num_heads", "attention_hidden_size", "mamba_d_ssm")


def _follow_hidden(base: dict, factor: float) -> dict:
    return {a: int(base[a] * factor) for a in _HIDDEN_FOLLOWERS if _int(base.get(a))}


def _moved(base: tuple, other: tuple | None) -> set[int] | None:
    if other is None or len(other) != len(base):
        return None
    return {i for i, (x, y) in enumerate(zip(base, other)) if x != y}


def infer_kv(builder: Builder, shrunk: S.Shrunk, vocab_limit: int) -> KVInference:
    """Run the base and every variation and name the axes. Raises NotApplicable / ProbeError."""
    notes: list[str] = []
    model, base = _build_base(builder, shrunk, vocab_limit, notes)
    attn = [i for i, k in enumerate(base.keys) if k is not None]
    if not attn:
        kinds = sorted({type(x).__name__ for x in getattr(returned(builder.run(model, BATCH, SEQ, vocab_limit)), "layers", [])})
        raise NotApplicable(f"the {base.cache_type} returned holds no attention K/V in any layer"
                            + (f" (its layers: {', '.join(kinds)})" if kinds else "") + ": recurrent state only")
    if len(attn) < len(base.keys):
        kinds = [type(x).__name__ for x in getattr(returned(builder.run(model, BATCH, SEQ, vocab_limit)), "layers", [])]
        others = sorted({kinds[i] for i in range(len(kinds)) if i not in attn}) if kinds else []
        if others and set(others) <= {kinds[i] for i in attn}:  # same layer class, just unfilled: not recurrent
            raise ProbeError(f"the {base.cache_type} has {len(base.keys)} layers but only {attn} hold K/V, and the "
                             f"empty ones are the same {', '.join(others)}: a layer count not recognised")
        raise Hybrid(f"hybrid: attention K/V in cache layers {attn} of {len(base.keys)}, the others hold "
                     f"{', '.join(others) or 'no K/V'} (recurrent / state-space state); a prefix on the attention "
                     f"layers alone leaves the recurrent state empty", attn, len(base.keys), kinds, model)
    cache_obj = returned(builder.run(model, BATCH, SEQ, vocab_limit))
    layer_objs = getattr(cache_obj, "layers", None) or []
    stateful = [i for i, x in enumerate(layer_objs) if _holds_state(x)]
    extra = _state_beside_layers(cache_obj)
    if extra:  # a cache class that keeps recurrent state in its own attribute (MiniMax: linear_cache)
        raise Hybrid(f"hybrid: the {base.cache_type} keeps state beside its {len(base.keys)} K/V layers ({', '.join(extra)}: "
                     f"recurrent / linear-attention layers); a prefix on the attention K/V alone leaves that state "
                     f"empty", attn, len(base.keys), [type(x).__name__ for x in layer_objs], model)
    if stateful:  # every layer caches K/V, but some also carry recurrent state (attention and SSM side by side)
        raise Hybrid(f"hybrid: cache layers {stateful} of {len(base.keys)} ({type(layer_objs[stateful[0]]).__name__}) "
                     f"hold recurrent / state-space state beside attention K/V; a prefix on the attention K/V alone "
                     f"leaves that state empty", attn, len(base.keys), [type(x).__name__ for x in layer_objs], model)
    k0, v0 = base.keys[attn[0]], base.values[attn[0]]
    if len(k0) != 4 or len(v0) != 4:
        raise ProbeError(f"one layer's K is {len(k0)}-D {k0} and V {len(v0)}-D {v0}; the spec format "
                         f"describes 4-D [b, h, s, d]-like tensors only")
    odd = sorted({(base.keys[i], base.values[i]) for i in attn} - {(k0, v0)})
    if odd:  # e.g. sliding-window layers with their own head counts or head dims
        raise ProbeError(f"attention layers differ in K/V shape ({[(k0, v0)] + odd}): the spec format has one "
                         f"heads and one head_dim for every layer")

    shapes: dict[str, tuple] = {}  # variation -> (keys list, values list) or an error string
    errors: dict[str, str] = {}
    for name, batch, seq in (("batch", NEW_BATCH, SEQ), ("seq", BATCH, NEW_SEQ)):
        ob = observe(builder.run(model, batch, seq, vocab_limit))
        shapes[name] = (ob.keys, ob.values)
    for name, overrides in _variations(shrunk):
        try:
            m, _ = builder.build(overrides)
            ob = observe(builder.run(m, BATCH, SEQ, vocab_limit))
            shapes[name] = (ob.keys, ob.values)
        except Exception as e:  # noqa: BLE001 - a variation the code rejects tells nothing; say so
            errors[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"

    def moves(name, which):  # dims of the first attention layer's K (0) or V (1) moved by a variation
        if name not in shapes:
            return None
        entries = shapes[name][which]
        idx = next((i for i, k in enumerate(entries) if k is not None), None)
        return None if idx is None else _moved((k0, v0)[which], entries[idx])

    b_dims, s_dims = moves("batch", 0), moves("seq", 0)
    if b_dims is None or len(b_dims) != 1 or s_dims is None or len(s_dims) != 1:
        raise ProbeError(f"cannot tell batch and sequence axes of K {k0}: batch 2->3 moved dims {b_dims}, "
                         f"sequence 5->7 moved dims {s_dims}")
    b, s = b_dims.pop(), s_dims.pop()
    rest = [i for i in range(4) if i not in (b, s)]
    vb, vs = moves("batch", 1), moves("seq", 1)
    if vb != {b} or vs != {s}:
        raise ProbeError(f"K {k0} and V {v0} put batch/sequence on different axes (V moved {vb}, {vs})")

    head_vars = [n for n in shapes if n.startswith("attr:") or n in ("hidden", "hidden+attr")]
    count_vars = [n for n in shapes if n in ("heads", "kv_heads")]

    def find_d(which):
        hits = [i for i in rest if any(i in (moves(n, which) or ()) for n in head_vars)
                and not any(i in (moves(n, which) or ()) for n in count_vars)]
        return hits[0] if len(hits) == 1 else None

    d = find_d(0)
    if d is None:
        raise ProbeError(
            f"cannot tell the head-dim axis of K {k0}: of dims {rest}, varying {head_vars or 'no head-dim size'} "
            f"moved {[(n, moves(n, 0)) for n in head_vars]}" + (f"; variations that failed: {errors}" if errors else ""))
    if find_d(1) != d:
        raise ProbeError(f"K {k0} and V {v0} put the head dim on different axes")
    h = next(i for i in rest if i != d)
    axes = [""] * 4
    axes[b], axes[s], axes[h], axes[d] = "b", "s", "h", "d"

    cfg = builder.sizes_of(model.config)
    r = shrunk.roles
    heads = _heads_expr(k0[h], h, r, cfg, moves, notes)
    head_dim = _head_dim_expr(k0[d], d, 0, r, cfg, moves, head_vars, errors)
    v_head_dim = _head_dim_expr(v0[d], d, 1, r, cfg, moves, head_vars, errors)
    if v0[h] != k0[h]:
        raise ProbeError(f"K {k0} and V {v0} have different head counts")

    heads = _flagged(heads, k0[h], h, builder, shrunk, vocab_limit, notes)
    layers = _layers_expr(base, attn, r, cfg, shapes, notes)
    if errors:
        notes.append("variations the code rejected (no evidence from them): " +
                     "; ".join(f"{k}: {v}" for k, v in errors.items()))
    return KVInference(axes, "s", layers, heads, head_dim, v_head_dim, base.container, cache_argument(model),
                       base.cache_type, attn, len(base.keys), k0, v0, notes, base.wrapped,
                       builder.inserts, builder.insert_at)


FLAG_WORDS = ("multi_query", "mqa", "gqa", "group")


def _flagged(heads, value, h, builder, shrunk, vocab_limit, notes) -> list:
    """A KV-head count chosen by a boolean flag (multi-query attention): turn each flag that is on
    off, and when the axis then follows another attribute, write ``<heads> if <flag>`` first."""
    first = heads[0]
    if not (isinstance(first, int) or first == shrunk.roles.get("kv_heads")):
        return heads
    for name, on in shrunk.defaults.items():
        if on is not True or not any(w in name for w in FLAG_WORDS):
            continue
        try:
            model, cfg = builder.build(S.merged(shrunk.overrides, **{name: False}))
            cfg = builder.sizes_of(cfg)
            ob = observe(builder.run(model, BATCH, SEQ, vocab_limit))
            k = next(k for k in ob.keys if k is not None)
        except Exception:  # noqa: BLE001 - off may need the KV heads equal to the heads: try that once
            kv, hs = shrunk.roles.get("kv_heads"), shrunk.roles.get("heads")
            if not (kv and hs):
                continue
            try:
                model, cfg = builder.build(S.merged(shrunk.overrides, **{name: False, kv: shrunk.overrides[hs]}))
                cfg = builder.sizes_of(cfg)
                ob = observe(builder.run(model, BATCH, SEQ, vocab_limit))
                k = next(k for k in ob.keys if k is not None)
            except Exception:  # noqa: BLE001 - the flag cannot be turned off: no evidence either way
                continue
            if k[h] != value and k[h] == shrunk.overrides[hs]:
                notes.append(f"KV heads: {value} while {name} is on; off, the code needs {kv} == {hs} and "
                             f"caches that many")
                return [f"{first} if {name}", kv]
            continue
        if k[h] == value:
            continue
        other = [a for a in (shrunk.roles.get("kv_heads"), shrunk.roles.get("heads"))
                 if a and a != first and getattr(cfg, a, None) == k[h]]
        if other:
            notes.append(f"KV heads: {value} while {name} is on, {other[0]} ({k[h]}) when it is off")
            return [f"{first} if {name}", other[0]]
    return heads


def _heads_expr(value, h, roles, cfg, moves, notes) -> list:
    kv_attr, heads_attr = roles.get("kv_heads"), roles.get("heads")
    by_kv, by_heads = h in (moves("kv_heads", 0) or ()), h in (moves("heads", 0) or ())
    if by_kv and kv_attr and getattr(cfg, kv_attr, None) == value:
        return [kv_attr] + ([heads_attr] if heads_attr else [])
    if by_heads and heads_attr and getattr(cfg, heads_attr, None) == value and not by_kv:
        return [heads_attr]
    if not by_kv and not by_heads:
        named = {a: getattr(cfg, a, None) for a in (kv_attr, heads_attr) if a}
        notes.append(f"the KV-head axis stays {value} whatever the head counts ({named}): a constant "
                     f"(multi-query) under this config; a flag in build.config may select it")
        return [value]
    raise ProbeError(f"the KV-head axis ({value}) moves with "
                     f"{'KV heads' if by_kv else 'heads'} but equals no attribute "
                     f"({kv_attr}={getattr(cfg, kv_attr, None) if kv_attr else None}, "
                     f"{heads_attr}={getattr(cfg, heads_attr, None) if heads_attr else None})")


def _head_dim_expr(value, d, which, roles, cfg, moves, head_vars, errors) -> list:
    for name in head_vars:
        if not name.startswith("attr:") or d not in (moves(name, which) or ()):
            continue
        attr = name[5:]
        if getattr(cfg, attr, None) == value:
            out = [attr]
            # transformers' `head_dim` may be None (derived from hidden / heads) in real configs
            if attr == "head_dim" and "hidden" in roles and "heads" in roles:
                hid, hs = getattr(cfg, roles["hidden"]), getattr(cfg, roles["heads"])
                if hs and hid % hs == 0 and hid // hs == value:
                    out.append(f"{roles['hidden']} / {roles['heads']}")
            return out
    if "hidden" in roles and "heads" in roles:
        hid, hs = getattr(cfg, roles["hidden"]), getattr(cfg, roles["heads"])
        derived = hs and hid % hs == 0 and hid // hs == value
        moved = any(d in (moves(n, which) or ()) for n in ("hidden", "hidden+attr"))
        if derived and moved:
            return [f"{roles['hidden']} / {roles['heads']}"]
    raise ProbeError(f"the {'KV'[which]} head dim ({value}) is not traced to a config attribute: varying "
                     f"{head_vars} moved {[(n, moves(n, which)) for n in head_vars]}"
                     + (f"; variations that failed: {errors}" if errors else ""))


def _layers_expr(base, attn, roles, cfg, shapes, notes) -> list:
    attr = roles.get("layers")
    if not attr:
        raise ProbeError("no layer-count attribute recognised in the config "
                         f"(looked for {', '.join(S.ROLES['layers'])})")
    n = getattr(cfg, attr)
    if "layers" not in shapes:
        raise ProbeError(f"varying {attr} {n} -> {n + 1} failed, so the layer count is not traced")
    more = sum(k is not None for k in shapes["layers"][0])
    if len(attn) == n and len(base.keys) == n and more == n + 1:
        return [attr]
    per = len(attn) // n if n else 0
    if per > 1 and len(attn) == len(base.keys) == per * n and more == per * (n + 1):
        # several attention blocks per layer, each with its own cache entry (LongCat-Flash: two)
        notes.append(f"the cache holds {per} K/V entries per layer ({attr}={n} -> {len(attn)}, {n + 1} -> {more})")
        return [f"{attr} * {per}"]
    raise ProbeError(f"the cache holds K/V for layers {attr}={n} -> {len(attn)} of {len(base.keys)} entries, "
                     f"{attr}={n + 1} -> {more}: not one K/V pair per layer")
