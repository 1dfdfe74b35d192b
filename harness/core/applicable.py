"""Specs that declare prefix tuning does not apply (``not_applicable: <reason>``), and the measurement
that backs the claim.

A prefix is K/V for attention to read, so it needs an attention KV cache: per-layer tensors that
grow by one position per token. A recurrent or state-space model (mamba, rwkv) keeps a state of
fixed size instead. The claim is measured, never taken on trust: the tiny model runs with a cache
on 5 and on 7 tokens, and every tensor it returns as cache is compared. One that grows with the
tokens is an attention K/V cache, and the spec's claim is an error naming ``not_applicable``.
"""
from __future__ import annotations

from pathlib import Path

# Output fields a model returns its cache in (transformers 5 ``cache``, 4.x ``past_key_values``,
# RWKV ``state``, Transformer-XL style ``mems``, older Mamba ``cache_params``).
CACHE_FIELDS = ("cache", "past_key_values", "state", "mems", "cache_params")
LENGTHS = (5, 7)  # two input lengths: a KV cache grows by their difference, a recurrent state does not
BATCH = 2
# Sections that describe how a prefix is fed: meaningless for a spec without a KV cache.
FEEDING = ("kv", "cache", "conventions", "fixes", "matrix", "variants", "expected_failures", "remote")


def read(r, path: Path, name: str, data: dict):
    """The ModelSpec of a file with a top-level ``not_applicable`` (``r`` is spec._Reader)."""
    from .spec import DEFAULT_VARIANT, ModelSpec, Variant, _read_build, _read_inputs

    allowed = {"family": True, "description": False, "match": True, "build": True, "inputs": False,
               "not_applicable": True}
    for key in FEEDING:
        if key in data:
            r.fail(key, "a spec that declares not_applicable runs no prefix, so it has no such section",
                   f"remove {key}, or remove not_applicable if the model has an attention KV cache")
    top = r.mapping(data, "", allowed)
    reason = r.string(top["not_applicable"], "not_applicable")
    match = r.mapping(top["match"], "match", {"model_type": True, "config_has": False})
    config_has = tuple(x for x in r.names(match.get("config_has", []) or ["*"], "match.config_has", None) if x != "*")
    spec = ModelSpec(
        name=name, path=str(path), family=r.string(top["family"], "family"),
        description=str(top.get("description", "")).strip(),
        match_model_types=r.names(match["model_type"], "match.model_type", None), match_config_has=config_has,
        build=_read_build(r, top["build"]), remote=None, kv=None, cache=None, conventions=None,
        inputs=_read_inputs(r, top.get("inputs") or {}), fixes=(),
        num_virtual_tokens=None, variants=(Variant(DEFAULT_VARIANT, adapters=()),), expected_failures=(),
        not_applicable=" ".join(reason.split()),
    )
    _check_config(r, spec)
    return spec


def _check_config(r, spec) -> None:
    """The classes resolve and the tiny config builds (the rest of the usual checks reads kv)."""
    from .models import resolve_class

    try:
        config_cls = resolve_class(spec.build.code_source, spec.build.config_class)
        resolve_class(spec.build.code_source, spec.build.model_class)
    except Exception as e:  # noqa: BLE001 - missing, misspelt, or a module that fails on import
        r.fail("build.class", f"a class cannot be found ({e})", "name classes of transformers (or module:Class)")
    try:
        config_cls(**spec.build.config)
    except Exception as e:  # noqa: BLE001
        r.fail("build.config", f"{spec.build.config_class} rejected it: {type(e).__name__}: {e}",
               "use the config class's own attribute names and valid values")


def _tensors(value, path: str, out: dict, depth: int = 0) -> None:
    """Every tensor reachable from a returned cache, by path (``cache.layers[0].keys``)."""
    import torch

    if depth > 5:
        return
    if isinstance(value, torch.Tensor):
        out[path] = tuple(value.shape)
    elif isinstance(value, dict):
        for k, v in value.items():
            _tensors(v, f"{path}[{k!r}]", out, depth + 1)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _tensors(v, f"{path}[{i}]", out, depth + 1)
    elif hasattr(value, "__dict__") and not isinstance(value, type):
        for k, v in vars(value).items():
            _tensors(v, f"{path}.{k}", out, depth + 1)


def cache_tensors(model, spec, length: int) -> tuple[str | None, dict]:
    """(type of the returned cache or None, {path: shape}) after one forward on BATCH x ``length``."""
    import torch

    from .inputs import make_inputs

    ids, mask = make_inputs(spec, model.config, BATCH, length, torch.Generator().manual_seed(0), "cpu")
    with torch.no_grad():
        try:
            out = model(input_ids=ids, attention_mask=mask, use_cache=True)
        except TypeError as e:  # a forward without attention_mask or use_cache: the plainest call
            if "unexpected keyword" not in str(e):
                raise
            out = model(input_ids=ids)
    # a ModelOutput holds only the fields that were set (reading others may warn of deprecated names)
    fields = dict(out.items()) if hasattr(out, "items") else {n: getattr(out, n, None) for n in CACHE_FIELDS}
    found, kinds = {}, []
    for name in CACHE_FIELDS:
        value = fields.get(name)
        if value is not None:
            kinds.append(f"{name}: {type(value).__name__}")
            _tensors(value, name, found)
    return (", ".join(kinds) or None), found


def measure(spec) -> dict:
    """Build the spec's tiny model and show it keeps no attention KV cache. Returns what was
    measured ({"cache", "state_tensors", "summary"}); raises SpecError on ``not_applicable`` when a
    cached tensor grows with the tokens (the model has a KV cache, so the claim is wrong)."""
    import torch

    from .models import build_model
    from .spec import _Reader

    r = _Reader(Path(spec.path))
    try:
        model = build_model(spec, code_source=spec.build.code_source, device="cpu", dtype=torch.float32)
    except Exception as e:  # noqa: BLE001
        r.fail("build.config", f"{spec.build.model_class} cannot be built from it: {type(e).__name__}: {e}",
               f"give {spec.build.config_class} values its model accepts")
    try:
        (kind, short), (_, long) = (cache_tensors(model, spec, n) for n in LENGTHS)
    except Exception as e:  # noqa: BLE001
        r.fail("(forward)", f"one forward with use_cache=True failed: {type(e).__name__}: {e}",
               "check build.config against the model's forward")
    grown = [f"{p} {short.get(p)} -> {long.get(p)}" for p in sorted(set(short) | set(long)) if short.get(p) != long.get(p)]
    if grown:
        r.fail("not_applicable", f"the spec says prefix tuning does not apply ({spec.not_applicable}), but the model's "
               f"cache grows with the tokens ({LENGTHS[0]} -> {LENGTHS[1]}): {'; '.join(grown[:3])}"
               + (f" (+{len(grown) - 3} more)" if len(grown) > 3 else "") + ": that is an attention KV cache",
               "remove not_applicable and write kv, cache and conventions (`prefix-compat probe MODEL_TYPE` drafts them)")
    if kind is None:
        summary = "the forward returns no cache with use_cache=True"
    else:
        summary = (f"the forward returns {kind} holding {len(long)} tensor(s), none of which grows with the tokens "
                   f"({LENGTHS[0]} -> {LENGTHS[1]}): a fixed-size state, no attention K/V")
    return {"cache": kind, "state_tensors": len(long), "summary": summary}
