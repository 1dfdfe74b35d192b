"""``prefix-compat probe``: draft a spec for any causal-LM model type, or a local remote-code folder.

    from harness.probe import probe_model_type, probe_code_dir
    result = probe_model_type("mistral")       # ProbeResult
    print(result.yaml)                          # draft spec (for n/a: a not_applicable spec, when one validates)
    result.status, result.reason, result.notes  # "ok" | "n/a" | "probe-failed", why, what was not inferred

Steps: shrink the config (shrink.py), run the tiny model with a cache and vary one size at a time
to name the cache axes and the attributes behind them (infer.py), then pick the mask and position
conventions by running the equivalence oracle with each candidate (pick.py), and write the draft
(draft.py). Nothing is guessed: what could not be told is listed with the reason.
"""
from __future__ import annotations

import inspect
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import draft as D
from . import pick as P
from . import shrink as S
from .infer import Builder, NotApplicable, ProbeError, infer_kv
from .pick import load_draft, pick_conventions
from .pick import measure_attention_only as measure_hybrid

STATUSES = ("ok", "n/a", "probe-failed")


@dataclass
class ProbeResult:
    target: str  # the model type or the folder probed
    status: str  # ok | n/a | probe-failed
    reason: str = ""  # why n/a or what blocked the probe (empty when ok)
    model_type: str | None = None
    kv: object | None = None  # infer.KVInference
    trials: list = field(default_factory=list)  # pick.Trial per convention candidate
    conventions: tuple | None = None  # (attention_mask, position_ids) chosen
    sliding_window: dict = field(default_factory=dict)
    draft: dict | None = None
    yaml: str | None = None
    notes: list = field(default_factory=list)  # what could not be inferred or needs a person
    attention_layers: list | None = None  # hybrids: the cache layers that hold attention K/V
    hybrid: object | None = None  # hybrids: pick.HybridTrial, the prefix on the attention layers alone, measured

    def summary(self) -> str:
        return f"{self.target}: {self.status}" + (f" ({self.reason})" if self.reason else "")


def _first_line(e: Exception) -> str:
    text = " ".join(str(e).split())[:300]  # multi-line validator messages: keep the substance
    return f"{type(e).__name__}: {text}"


# ----------------------------------------------------------------------------- the core
def _not_applicable_draft(res: ProbeResult, class_names: tuple[str, str], config: dict, match_types) -> None:
    """An ``n/a`` spec to redirect into model_specs/ (`probe TYPE > model_specs/TYPE.yaml`), kept only when it
    loads and `validate`'s own measurement of the claim agrees; otherwise a note says why there is none."""
    from harness.core.spec import SpecError, check_buildable

    draft = D.make_not_applicable_draft(
        family=res.model_type, model_types=list(dict.fromkeys(match_types or [res.model_type])),
        model_class=class_names[0], config_class=class_names[1], code_source="transformers", config=config,
        reason=res.reason)
    try:
        check_buildable(load_draft(draft, name=re.sub(r"[^a-z0-9_]", "_", res.model_type.lower())))
    except (SpecError, ValueError) as e:
        res.notes.append(f"no n/a spec drafted: it does not pass validate ({_first_line(e)})")
        return
    res.draft, res.yaml = draft, D.to_yaml(draft, [
        f"Drafted by `prefix-compat probe` for {res.target}: no attention KV cache, measured. The matrix gives",
        "this spec one n/a row with the reason below; `prefix-compat validate` measures the claim again."])


def probe_classes(config_class, model_class, *, target: str, model_type: str, code_source: str,
                  class_names: tuple[str, str], config_json: dict | None = None, fixed: dict | None = None,
                  remote: dict | None = None, match_types: list | None = None) -> ProbeResult:
    """Probe a (config class, model class) pair: a transformers model, a reference model, or remote
    code already loaded. ``class_names`` = (model class, config class) as the spec writes them;
    ``config_json`` is a real config.json's settings (a remote folder's): its sizes are shrunk, its other
    settings kept (default: the config class's defaults); ``fixed`` are
    settings every build needs (remote code: CPU float32 flags)."""
    res = ProbeResult(target=target, status="probe-failed", model_type=model_type)
    try:
        config_json = {k: v for k, v in (config_json or {}).items() if k not in _META_KEYS}
        defaults, required = S.valid_defaults(config_class, config_json)
        class_defaults = S.valid_defaults(config_class, {})[0]
    except Exception as e:  # noqa: BLE001
        res.reason = f"the config class {config_class.__name__} cannot be built with its defaults: {_first_line(e)}"
        return res
    shrunk = S.shrink(defaults, params=S.init_params(config_class))
    # settings of the config.json that differ from the class defaults and are not sizes: kept in every build
    kept = {k: v for k, v in config_json.items() if k not in shrunk.overrides and class_defaults.get(k, object()) != v}
    fixed = dict(fixed or {})
    if defaults.get("is_decoder") is False:
        # encoder stacks that transformers can run causally (BERT-like *ForCausalLM / *LMHeadModel) only
        # do so with is_decoder=True; without it they are encoders, and there is no past to prefix
        fixed["is_decoder"] = True
        res.notes.append("is_decoder=True set: the class is an encoder stack that runs causally only as a decoder")
    missing = [r for r in ("hidden", "layers", "heads", "vocab") if r not in shrunk.roles]
    nested = [k for k, v in shrunk.overrides.items() if isinstance(v, dict) and S.shrink(defaults[k]).roles.get("layers")]
    sub, outer = None, {}
    if missing and nested:
        # a composite (multimodal) config: the language model's sizes live in a sub-config; the probe
        # shrinks and varies that one, and the spec names its sizes by dotted paths (text_config.head_dim)
        sub = S.text_sub_config(defaults, nested)
        if sub is None:
            res.reason = (f"the sizes live in sub-configs {nested} of {config_class.__name__} (a composite config) "
                          f"and none is the language model's (looked for {', '.join(S.TEXT_SUB_CONFIGS)}, or the one "
                          f"sub-config with a vocabulary): which one the cache follows cannot be told")
            return res
        outer = {k: v for k, v in shrunk.overrides.items() if k != sub}
        shrunk = S.shrink(defaults[sub])
        missing = [r for r in ("hidden", "layers", "heads", "vocab") if r not in shrunk.roles]
        res.notes.append(f"composite config: sizes varied in {sub}; expressions name them as {sub}.<attribute>")
    if missing:
        res.notes.append("sizes not recognised (left at class defaults): " +
                         ", ".join(f"{r} (looked for {', '.join(S.ROLES[r])})" for r in missing))
    res.sliding_window = _windows(shrunk)
    res.notes.extend(f"{k}={v} set in the tiny model (audio codebooks; MusicGen's decoder reads its input rows grouped "
                     f"by {k}): a real checkpoint's inputs may need that grouping, its K/V layout does not change" for k, v in S.GROUPS.items()
                     if k in shrunk.overrides)
    builder = Builder(config_class, model_class, defaults, fixed, kept, sub=sub, outer=outer, required=required)
    if required:
        res.notes.append(f"the class defaults fail its own validator; set as it demands: {required}")
    vocab_limit = S.SPECIAL_BASE if "vocab" in shrunk.roles else 100
    try:
        kv = infer_kv(builder, shrunk, vocab_limit)
    except NotApplicable as e:
        res.status, res.reason = "n/a", str(e)
        params = inspect.signature(model_class.forward).parameters
        if "returns no cache" in res.reason and not {"cache", "past_key_values"} & set(params):
            res.reason = ("the forward takes no cache argument (neither cache= nor past_key_values=) and returns "
                          "none: there is no KV cache to put a prefix in")
        res.attention_layers = getattr(e, "attention_layers", None)
        if getattr(e, "model", None) is not None and res.attention_layers:
            _hybrid_verdict(res, e, vocab_limit)
        elif code_source == "transformers":
            _not_applicable_draft(res, class_names, builder.settings(shrunk.overrides), match_types)
        return res
    except ProbeError as e:
        res.reason = str(e)
        return res
    except Exception as e:  # noqa: BLE001 - the tiny model does not build or run: say how
        if _NEEDS_INPUTS.search(str(e)) and _builds(builder, shrunk):
            # the model builds but its forward refuses token ids alone: a drafter fed by another model's
            # states, a model that needs a language id or pixels: not a text causal LM a prefix is put into
            res.status = "n/a"
            res.reason = (f"the forward does not run on token ids alone, it needs other inputs: {_first_line(e)}; "
                          f"there is no text-only causal LM to put a prefix in")
            return res
        res.reason = f"the tiny model does not build or run: {_first_line(e)}"
        res.notes.append(f"tiny config tried: {shrunk.overrides}")
        return res
    if sub:
        kv = kv_in_sub_config(kv, sub)
    res.kv = kv
    res.notes.extend(kv.notes)
    if kv.wrapped:
        res.notes.append(f"the cache comes as a {kv.wrapped}; its self-attention part was read")
    argument = "auto" if code_source == "transformers" and kv.container == "transformers_cache" else kv.argument
    heads_value = _value(kv.heads, builder, shrunk)
    # MLA: V's last dim is its own size (a latent cache); the spec's kv.v_head_dim says which
    v_differs = kv.v_head_dim != kv.head_dim and _value(kv.v_head_dim, builder, shrunk) != _value(kv.head_dim, builder, shrunk)
    draft = D.make_draft(
        family=model_type, model_types=list(dict.fromkeys(match_types or [model_type])),
        description=f"{class_names[0]} ({code_source}), drafted by prefix-compat probe",
        code_source=code_source, model_class=class_names[0], config_class=class_names[1],
        config=builder.settings(shrunk.overrides), kv=kv, argument=argument,
        conventions=("extend_2d", "model_continues"), heads_value=heads_value, v_head_dim=v_differs)
    if v_differs and not spec_knows_v_head_dim():
        res.reason = (f"K and V head dims differ (K {kv.k_shape}, head dim {kv.head_dim}; V {kv.v_shape}, head dim "
                      f"{kv.v_head_dim}): the draft carries kv.v_head_dim, which this harness.core.spec does not "
                      f"know yet (it comes with the MLA support of issue 9 item 3), so it cannot be loaded or measured")
        res.draft, res.yaml = draft, D.to_yaml(draft, [f"NOT VALID YET: {res.reason}"])
        return res
    model, _ = builder.build(shrunk.overrides)
    try:
        load_draft(draft)  # the draft must load before conventions are worth measuring
    except Exception as e:  # noqa: BLE001
        res.reason = f"the draft does not pass harness.core.spec.load_spec: {e}"
        res.draft, res.yaml = draft, D.to_yaml(draft, [f"NOT VALID: {res.reason}"])
        return res
    res.trials = pick_conventions(model, draft, draft["matrix"]["num_virtual_tokens"])
    passing = [t for t in res.trials if t.passed]
    comments = [f"Drafted by `prefix-compat probe` for {target}: measured on a tiny random model."]
    if passing:
        res.conventions = (passing[0].attention_mask, passing[0].position_ids)
        res.status = "ok"
        comments.append("conventions: the first that reproduces the full-context logits (<= 1e-4); all that do: " +
                        ", ".join(f"{t.attention_mask}+{t.position_ids}" for t in passing))
    elif all(t.error is None for t in res.trials) and _ONE_TOKEN.search(res.trials[0].message):
        # the model refuses more than one new token behind a cache: prefix tuning's training forward
        # (P prefix positions, then the whole input) cannot run at all
        res.status = "n/a"
        res.reason = (f"the model runs a forward behind a cache on one new token only ({res.trials[0].message}): "
                      "a prefix cannot be fed with a whole input")
        res.draft, res.yaml = None, None
        return res
    else:
        best = min((t for t in res.trials if t.error is not None), key=lambda t: t.error, default=None)
        res.reason = ("no (attention_mask, position_ids) candidate reproduces the full-context logits with a "
                      "real-token prefix: " + "; ".join(f"{t.attention_mask}+{t.position_ids}: {t.message}"
                                                         for t in res.trials))
        if best is not None:
            res.conventions = (best.attention_mask, best.position_ids)
            comments.append(f"NOT MEASURED EQUAL: conventions below are the closest candidate ({best.message}); "
                            "the model may need a fix (harness/core/fixes.py)")
    if res.conventions:
        draft["conventions"] = {"attention_mask": res.conventions[0], "position_ids": res.conventions[1]}
    if remote:
        draft = {**{k: v for k, v in draft.items() if k not in ("kv", "cache", "conventions", "inputs", "matrix")},
                 "remote": remote, **{k: draft[k] for k in ("kv", "cache", "conventions", "inputs", "matrix")}}
    if res.sliding_window:
        comments.append(f"sliding window: {res.sliding_window} (set above the probe's inputs in build.config)")
    comments.extend(f"note: {n}" for n in res.notes)
    res.draft, res.yaml = draft, D.to_yaml(draft, comments)
    return res


# A forward's message when it needs inputs besides token ids (transformers' own wording).
_NEEDS_INPUTS = re.compile(r"cannot be None|must be (?:provided|passed|given)|set_default_language|pixel_values "
                           r"(?:is|are) required|requires? (?:pixel_values|input_features|an? \w+ input)")


# A model's refusal of several new tokens behind a cache (ProphetNet's wording, and the like).
_ONE_TOKEN = re.compile(r"only supported for \S+ of length 1|one (?:new )?token at a time", re.I)


def _builds(builder, shrunk) -> bool:
    try:
        builder.build(shrunk.overrides)
        return True
    except Exception:  # noqa: BLE001
        return False


def _hybrid_verdict(res: ProbeResult, e, vocab_limit: int) -> None:
    """A hybrid: measure a real-token prefix on its attention layers alone (recurrent state empty).
    The verdict stays n/a with the measurement as its reason unless that reproduces the logits, which
    the spec format cannot express yet (a note says what it would take)."""
    trial = measure_hybrid(e.model, e.attention_layers, vocab_limit)
    res.hybrid = trial
    where = f"attention K/V in cache layers {e.attention_layers} of {e.total_layers}"
    if trial.passed:
        res.reason = (f"hybrid: {where}; a real-token prefix on those layers alone reproduces the full-context "
                      f"logits ({trial.message}), but specs cannot yet name the attention layers (kv.attention_layers) "
                      f"for the attention_layers container")
        return
    whole = ("the model continues its own full cache (recurrent state included)" if trial.whole is not None and
             trial.whole <= P.TOLERANCE else "even its own full cache does not continue exactly")
    res.reason = (f"{str(e).split(';')[0]}, which a K/V prefix cannot set: a real-token prefix on the attention K/V "
                  f"alone does not reproduce the full-context logits (measured: {trial.message}; {whole})")


def kv_in_sub_config(kv, sub: str):
    """The inference with every attribute named from the top-level config (``text_config.head_dim``)."""
    import dataclasses

    from harness.core.expr import ConfigExpr

    def dotted(text):
        if isinstance(text, int):
            return text
        e = ConfigExpr.parse(text)
        name = {t: f"{sub}.{t}" for t in e.names()}
        out = name.get(e.a, e.a) + (f" {e.op} {name.get(e.b, e.b)}" if e.op else "")
        return out + (f" if {name[e.flag]}" if e.flag else "")

    fields = ("layers", "heads", "head_dim", "v_head_dim")
    return dataclasses.replace(kv, **{f: [dotted(x) for x in getattr(kv, f)] for f in fields},
                               inserts=tuple(f"{sub}.{a}" for a in kv.inserts))


def spec_knows_v_head_dim() -> bool:
    """Whether the installed spec format has kv.v_head_dim (K and V of different head dims)."""
    from harness.core.spec import KVSpec

    return "v_head_dim" in getattr(KVSpec, "__dataclass_fields__", {})


def _value(exprs, builder, shrunk) -> int | None:
    from harness.core.expr import ConfigExpr, first_applicable

    try:
        cfg = builder.config_class(**builder.settings(shrunk.overrides))
        return first_applicable(tuple(ConfigExpr.parse(x) for x in exprs), cfg)
    except Exception:  # noqa: BLE001
        return None


def _windows(shrunk: S.Shrunk) -> dict:
    """Sliding-window attributes and which layers use them (layer_types), as the class defines them."""
    out = {}
    for name, default in shrunk.windows.items():
        if default:
            out[name] = {"class_default": default, "tiny": shrunk.overrides.get(name)}
    types = shrunk.overrides.get("layer_types")
    if isinstance(types, list) and out:
        out["sliding_layers"] = [i for i, t in enumerate(types) if "sliding" in str(t)]
    return out


# ----------------------------------------------------------------------------- entry points
def probe_model_type(model_type: str, config_json: dict | None = None) -> ProbeResult:
    """Probe a model type of the installed transformers (a key of MODEL_FOR_CAUSAL_LM_MAPPING_NAMES).
    ``config_json``: a released checkpoint's config.json settings (sizes shrunk, other settings such as its
    layer kinds kept) instead of the config class's defaults, which may differ from every checkpoint."""
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if model_type not in CONFIG_MAPPING_NAMES:
        return ProbeResult(model_type, "probe-failed", f"transformers {transformers.__version__} has no model type "
                           f"{model_type!r}", model_type)
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return ProbeResult(model_type, "n/a", f"not a causal LM: transformers {transformers.__version__} has no "
                           f"AutoModelForCausalLM class for {model_type!r}", model_type)
    model_name, config_name = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[model_type], CONFIG_MAPPING_NAMES[model_type]
    try:
        model_class, config_class = getattr(transformers, model_name), getattr(transformers, config_name)
    except Exception as e:  # noqa: BLE001 - a missing optional dependency, typically
        return ProbeResult(model_type, "probe-failed", f"{model_name} cannot be imported: {_first_line(e)}", model_type)
    own = getattr(model_class, "config_class", None)
    note = None
    if own is not None and own is not config_class and getattr(transformers, own.__name__, None) is own:
        # the causal-LM class of a multimodal type takes only the text config (MllamaForCausalLM:
        # MllamaTextConfig); the composite config's sizes sit in sub-configs no spec expression reaches
        note = (f"{model_name} is built from {own.__name__} (model_type {getattr(own, 'model_type', '?')!r}), not "
                f"{config_name}: the text model of a composite type")
        config_class, config_name = own, own.__name__
    res = probe_classes(config_class, model_class, target=model_type, model_type=model_type,
                        code_source="transformers", class_names=(model_name, config_name), config_json=config_json,
                        match_types=[model_type, getattr(own, "model_type", model_type)] if note else None)
    if note:
        res.notes.insert(0, note)
        if res.yaml:
            res.yaml = f"# note: {note}\n" + res.yaml
    return res


def probe_build(build: dict, *, target: str, model_type: str) -> ProbeResult:
    """Probe the classes of a spec's ``build`` section (a mapping as written in the YAML: code_source,
    class, config_class, config), its config's non-size settings kept: how the probe is checked
    against the hand-written specs of model_specs/ (tests/test_probe_rediscovers.py)."""
    from harness.core.models import resolve_class

    source = build["code_source"]
    classes = (resolve_class(source, build["config_class"]), resolve_class(source, build["class"]))
    return probe_classes(*classes, target=target, model_type=model_type, code_source=source,
                         class_names=(build["class"], build["config_class"]), config_json=dict(build["config"]))


# Remote-code settings that select kernels or half precision: a CPU float32 probe turns them off.
_CPU_FLAGS = {"fp32": True, "bf16": False, "fp16": False, "use_flash_attn": False}
_META_KEYS = ("auto_map", "architectures", "transformers_version", "_name_or_path", "model_type")


def probe_code_dir(path, trust_remote_code: bool = False) -> ProbeResult:
    """Probe a local remote-code folder (config.json + *.py). Executes the folder's code, so it
    needs ``trust_remote_code=True`` (the CLI: --trust-remote-code or PREFIX_COMPAT_TRUST_REMOTE_CODE=1)."""
    folder = Path(path).resolve()
    target = str(folder)
    cfg_file = folder / "config.json"
    if not cfg_file.is_file():
        return ProbeResult(target, "probe-failed", f"{cfg_file} not found: point --code-dir at a folder with "
                           f"config.json and the model's *.py files")
    try:
        raw = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return ProbeResult(target, "probe-failed", f"{cfg_file} is not readable JSON: {e}")
    model_type = raw.get("model_type") or folder.name.lower()
    auto_map = raw.get("auto_map") or {}
    auto_class = next((a for a in ("AutoModelForCausalLM", "AutoModel") if a in auto_map), None)
    if auto_class is None or "AutoConfig" not in auto_map:
        return ProbeResult(target, "probe-failed", f"{cfg_file} auto_map has no AutoConfig and AutoModelForCausalLM/"
                           f"AutoModel entries (found {sorted(auto_map) or 'none'}): not a remote-code folder", model_type)
    if not trust_remote_code:
        return ProbeResult(target, "probe-failed", "probing a code folder executes its code: pass "
                           "--trust-remote-code (or set PREFIX_COMPAT_TRUST_REMOTE_CODE=1)", model_type)
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    try:
        config_class = get_class_from_dynamic_module(auto_map["AutoConfig"], str(folder), local_files_only=True)
        model_class = get_class_from_dynamic_module(auto_map[auto_class], str(folder), local_files_only=True)
    except Exception as e:  # noqa: BLE001 - missing packages, syntax errors: say which
        return ProbeResult(target, "probe-failed", f"the folder's code does not load: {_first_line(e)}", model_type)
    user = {k: v for k, v in raw.items() if k not in _META_KEYS}
    try:
        defaults = config_class(**user).to_dict()
    except Exception as e:  # noqa: BLE001
        return ProbeResult(target, "probe-failed", f"{config_class.__name__} rejects config.json: {_first_line(e)}",
                           model_type)
    fixed = {k: v for k, v in _CPU_FLAGS.items() if k in raw}
    remote, remote_notes = _remote_section(folder, raw, auto_class, fixed)
    res = probe_classes(config_class, model_class, target=target, model_type=model_type, code_source="reference",
                        class_names=(f"{model_class.__module__}:{model_class.__name__}",
                                     f"{config_class.__module__}:{config_class.__name__}"),
                        config_json=user, fixed=fixed, remote=remote)
    res.notes = remote_notes + res.notes
    if res.draft is not None:
        _reuse_reference_build(res, config_class, defaults)
    return res


def _remote_section(folder: Path, raw: dict, auto_class: str, fixed: dict) -> tuple[dict, list]:
    notes = []
    name = raw.get("_name_or_path") or ""
    repo = name if name.count("/") == 1 and not Path(name).is_absolute() else None
    if repo is None:
        notes.append(f"remote.repo: config.json's _name_or_path ({name!r}) is not a hub id; the folder name "
                     f"{folder.name!r} is not one either: write owner/name")
        repo = f"unknown/{folder.name}"
    commit, why = D.git_revision(folder)
    if commit is None:
        notes.append(f"remote.revision unknown: {why}; write the 40-hex hub commit of this code")
    hashes = D.code_hashes(folder)
    if not hashes:
        notes.append("no *.py files in the folder: nothing to pin")
    section = {"repo": repo, "revision": commit or "unknown", "auto_class": auto_class}
    if fixed:
        section["config"] = fixed  # the CPU float32 settings this revision's config.json needed
        notes.append(f"remote.config: {fixed} (config.json selects half precision / kernels; the probe ran float32 CPU)")
    section["weights"] = "own"
    section["sha256"] = hashes
    return section, notes


def _reuse_reference_build(res: ProbeResult, config_class, defaults: dict) -> None:
    """A code folder of a family with a spec in model_specs/ (a new Qwen or ChatGLM revision) keeps
    that spec's reference model as its build; otherwise the build names the folder's own classes,
    which resolve only inside the probing process, and the notes say so."""
    from harness.core.spec import find_spec_for, load_specs_report

    try:  # the specs that load here (a spec naming a class this transformers lacks must not stop the probe)
        spec = find_spec_for(config_class(**defaults),
                             [s for s in load_specs_report()[0] if s.build.code_source == "reference"])
    except Exception:  # noqa: BLE001 - no matching spec: keep the folder's classes
        spec = None
    if spec is None:
        res.notes.append("build: no reference model (harness/reference) for this family, and the spec format builds "
                         "only transformers or reference classes; the build names the folder's dynamic module, which "
                         "resolves only where the folder has been loaded")
        return
    own = res.draft["build"].get("config", {})
    res.draft["build"] = {"code_source": "reference", "class": spec.build.model_class,
                          "config_class": spec.build.config_class, "config": dict(spec.build.config), "seed": 0}
    if spec.match_config_has:
        res.draft["match"]["config_has"] = list(spec.match_config_has)
    res.notes.append(f"build: reuses the reference model of model_specs/{Path(spec.path).name}; the probe's own tiny "
                     f"config for this revision (what its code was measured with): {json.dumps(own, sort_keys=True)}")
    try:
        load_draft(res.draft)
    except Exception as e:  # noqa: BLE001
        res.notes.append(f"the draft with that build does not load: {e}")
    res.yaml = D.to_yaml(res.draft, [f"Drafted by `prefix-compat probe` for {res.target}."] +
                         [f"note: {n}" for n in res.notes])
