"""Model specs: one declarative YAML file per architecture in ``model_specs/``.

A spec loads into frozen, typed objects. Unknown keys, wrong types and inconsistent values are
errors that name the file, the field and the fix, so a user adding a model learns what to write
without reading this code. See ``model_specs/README.md`` for the format.
"""
from __future__ import annotations

import copy
import difflib
import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from . import names
from .expr import ConfigExpr, ExprError
from .layout import AXES, Layout, LayoutError

# The specs live in model_specs/ at the top of a checkout (the source of truth); a built wheel carries
# the same files as harness/model_specs/ (pyproject.toml maps the folder into the package), so an
# installed package finds them beside its own code.
_PACKAGED_SPECS = Path(__file__).resolve().parents[1] / "model_specs"
SPEC_DIR = _PACKAGED_SPECS if _PACKAGED_SPECS.is_dir() else Path(__file__).resolve().parents[2] / "model_specs"
SPEC_SUFFIXES = (".yaml", ".yml")
DEFAULT_VARIANT = "default"


class SpecError(ValueError):
    """A problem in a spec file: says which file, which field, what is wrong and how to fix it."""

    def __init__(self, path, field_: str, problem: str, fix: str):
        self.path, self.field, self.problem, self.fix = str(path), field_, problem, fix
        super().__init__(f"{self.path}: {field_}: {problem}. Fix: {fix}")


# ----------------------------------------------------------------------------- typed objects
@dataclass(frozen=True)
class KVSpec:
    layout: Layout
    concat_axis: str  # named axis; its dim is layout.dim(concat_axis)
    layers: tuple[ConfigExpr, ...]
    heads: tuple[ConfigExpr, ...]
    head_dim: tuple[ConfigExpr, ...]  # K's last dim (and V's, unless v_head_dim is given)
    # V's last dim when it differs from K's (MLA: DeepSeek-V2/V3 cache a latent); None: head_dim
    v_head_dim: tuple[ConfigExpr, ...] | None = None

    @property
    def concat_dim(self) -> int:
        return self.layout.dim(self.concat_axis)


@dataclass(frozen=True)
class CacheSpec:
    container: str
    argument: str = "auto"


@dataclass(frozen=True)
class Conventions:
    attention_mask: str
    position_ids: str


@dataclass(frozen=True)
class InputSpec:
    """What every input row must look like (ChatGLM-6B needs [gMASK] and <bos> in each row)."""

    vocab_limit: ConfigExpr | None = None  # random tokens are drawn below this
    insert_tokens: tuple[ConfigExpr, ...] = ()  # config token ids inserted in every row
    insert_at: int = -1  # index where they go (negative counts from the end)


@dataclass(frozen=True)
class Fix:
    name: str
    module_class: str
    reason: str


@dataclass(frozen=True)
class BuildSpec:
    code_source: str  # transformers | reference
    model_class: str  # "LlamaForCausalLM" or "harness.reference.qwen:QWenLMHeadModel"
    config_class: str
    config: dict
    seed: int = 0
    checkpoints: tuple[str, ...] = ()


@dataclass(frozen=True)
class RemoteSpec:
    repo: str
    revision: str
    auto_class: str = "AutoModelForCausalLM"
    transformers: SpecifierSet | None = None
    config: dict = field(default_factory=dict)  # overrides applied to the real config.json
    mirror: str | None = None  # a public copy where `revision` can be read when the hub one cannot
    # "own": the remote code's initialisation; "reference": load our reference model's weights (same
    # names), for code that leaves weights uninitialised (ChatGLM's skip_init) and for like-for-like rows
    weights: str = "own"
    # sha256 of code files at `revision`: a local folder must hold exactly that code to count as pinned
    sha256: dict = field(default_factory=dict)
    # modules the code imports beyond torch and transformers (import names, e.g. einops): checked
    # before the code runs, so a missing one is named with the install command, not met mid-load
    requires: tuple[str, ...] = ()


@dataclass(frozen=True)
class Variant:
    name: str
    description: str = ""
    num_virtual_tokens: ConfigExpr | None = None
    apply_fixes: bool = True
    adapters: tuple[str, ...] = names.ADAPTERS


@dataclass(frozen=True)
class ExpectedFailure:
    adapters: tuple[str, ...]
    checks: tuple[str, ...]
    variants: tuple[str, ...]
    code_sources: tuple[str, ...]
    versions: tuple[tuple[str, SpecifierSet], ...]  # (package, range)
    reason: str
    # When given, the declaration covers only a failure whose message contains this text
    # (case-sensitive substring): another error in the same cell is an error, not an expected failure.
    raises: str | None = None
    # The dtypes the failure is measured under ("*": all). A failure that is a small numerical error can
    # fall below a lower precision's bar, so such a declaration names the dtype it was measured in.
    dtypes: tuple[str, ...] = ("*",)

    def covers_message(self, message: str | None) -> bool:
        """Whether a failure with this message is the one declared (always, when no ``raises``)."""
        return self.raises is None or (message is not None and self.raises in message)

    def matches(self, adapter: str, check: str, variant: str, code_source: str, versions: dict[str, str],
                dtype: str = "float32") -> bool:
        def hit(value, allowed):
            return "*" in allowed or value in allowed

        if not (hit(adapter, self.adapters) and hit(check, self.checks) and hit(variant, self.variants)):
            return False
        if not hit(dtype, self.dtypes):
            return False
        if not hit(code_source, self.code_sources):
            return False
        for package, spec in self.versions:
            have = versions.get(package)
            if have is None or Version(have) not in spec:
                return False
        return True


@dataclass(frozen=True)
class ModelSpec:
    name: str
    path: str
    family: str
    description: str
    match_model_types: tuple[str, ...]
    match_config_has: tuple[str, ...]
    build: BuildSpec
    remote: RemoteSpec | None
    kv: KVSpec
    cache: CacheSpec
    conventions: Conventions
    inputs: InputSpec
    fixes: tuple[Fix, ...]
    num_virtual_tokens: ConfigExpr
    variants: tuple[Variant, ...]
    expected_failures: tuple[ExpectedFailure, ...]
    # ``not_applicable: <reason>`` (harness/core/applicable.py): no attention KV cache, measured; such a
    # spec has no kv, cache, conventions or num_virtual_tokens (None) and runs one ``n/a`` row
    not_applicable: str | None = None

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)

    def expected_failure(self, adapter, check, variant, code_source, versions, dtype="float32") -> ExpectedFailure | None:
        for ef in self.expected_failures:
            if ef.matches(adapter, check, variant, code_source, versions, dtype):
                return ef
        return None

    def matches_config(self, config) -> bool:
        if getattr(config, "model_type", None) not in self.match_model_types:
            return False
        return all(getattr(config, a, None) is not None for a in self.match_config_has)


# ----------------------------------------------------------------------------- parsing helpers
class _Reader:
    """Walks one file's mapping, turning every problem into a SpecError naming the field."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, field_: str, problem: str, fix: str):
        raise SpecError(self.path, field_, problem, fix)

    def mapping(self, data, field_: str, allowed: dict[str, bool]) -> dict:
        """Check a mapping's keys: ``allowed`` maps key -> required."""
        if not isinstance(data, dict):
            where = field_ or "(top level)"
            self.fail(where, f"expected a mapping, got {type(data).__name__}",
                      f"write {field_ or 'the file'} as 'key: value' lines")
        for key in data:
            if key not in allowed:
                near = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"did you mean {near[0]!r}?" if near else f"allowed keys: {', '.join(allowed)}"
                self.fail(_join(field_, key), "unknown key", f"remove it or correct its name ({hint})")
        for key, required in allowed.items():
            if required and key not in data:
                self.fail(_join(field_, key), "missing", f"add '{key}:' under {field_ or 'the top level'}")
        return data

    def string(self, data, field_, choices=None) -> str:
        if not isinstance(data, str) or not data.strip():
            self.fail(field_, f"expected a non-empty string, got {data!r}", "write a plain word or sentence")
        if choices is not None and data not in choices:
            near = difflib.get_close_matches(data, choices, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            self.fail(field_, f"{data!r} is not one of {', '.join(choices)}", f"use one of those{hint}")
        return data

    def names(self, data, field_, choices) -> tuple[str, ...]:
        """A name, a list of names, or '*' (all)."""
        items = [data] if isinstance(data, str) else data
        if not isinstance(items, list) or not items:
            self.fail(field_, f"expected a name or a list of names, got {data!r}", "write e.g. [harness, naive] or '*'")
        out = []
        for i, item in enumerate(items):
            if item == "*":
                out.append("*")
                continue
            out.append(self.string(item, f"{field_}[{i}]" if isinstance(data, list) else field_, choices))
        return tuple(out)

    def exprs(self, data, field_) -> tuple[ConfigExpr, ...]:
        items = data if isinstance(data, list) else [data]
        if not items:
            self.fail(field_, "an empty list", "give a number or a config attribute")
        try:
            return tuple(ConfigExpr.parse(x) for x in items)
        except ExprError as e:
            self.fail(field_, str(e), "name config attributes, e.g. [num_key_value_heads, num_attention_heads]")

    def expr(self, data, field_) -> ConfigExpr:
        """Exactly one expression (a number or one attribute)."""
        items = self.exprs(data, field_)
        if len(items) != 1:
            self.fail(field_, f"expected one value, got {len(items)}", "write a number or one config attribute")
        return items[0]

    def specifier(self, data, field_) -> SpecifierSet:
        try:
            return SpecifierSet(str(data))
        except InvalidSpecifier:
            self.fail(field_, f"{data!r} is not a version range", "write a PEP 440 range such as '>=4.45,<5'")


def _join(parent: str, key) -> str:
    return f"{parent}.{key}" if parent else str(key)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML loader that refuses duplicate keys (plain YAML silently keeps the last one)."""


def _construct_mapping(loader, node, deep=False):
    loader.flatten_mapping(node)  # resolve YAML merge keys (<<) first; they are not duplicates
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, (str, int, float, bool, type(None))):
            raise yaml.constructor.ConstructorError(None, None, f"a key must be a plain word, got {key!r}",
                                                    key_node.start_mark)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._]*$")
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")


# ----------------------------------------------------------------------------- the loader
def load_spec(path: str | Path) -> ModelSpec:
    path = Path(path)
    r = _Reader(path)
    if path.suffix not in SPEC_SUFFIXES:
        r.fail("(file)", f"spec files end in {' or '.join(SPEC_SUFFIXES)}", "rename the file to <name>.yaml")
    name = path.stem
    if not _NAME_RE.match(name):
        r.fail("(file name)", f"{name!r} is not a valid spec name", "use lower-case letters, digits, '.' and '_' (no '-')")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        r.fail("(syntax)", f"not valid YAML: {str(e).splitlines()[0]} {getattr(e, 'problem_mark', '') or ''}".strip(),
               "correct the YAML syntax at that line")
    except OSError as e:
        r.fail("(file)", f"cannot read: {e}", "check the path")
    except UnicodeDecodeError as e:
        r.fail("(file)", f"not UTF-8 text ({e.reason} at byte {e.start})", "save the file as UTF-8")
    if data is None:
        r.fail("(file)", "the file is empty", "copy an existing spec such as model_specs/llama.yaml and edit it")
    if isinstance(data, dict) and "not_applicable" in data:  # no KV cache: no kv/cache/conventions sections
        from .applicable import read

        return read(r, path, name, data)

    top = r.mapping(data, "", {
        "family": True, "description": False, "match": True, "build": True, "remote": False, "kv": True,
        "cache": True, "conventions": True, "inputs": False, "fixes": False, "matrix": False,
        "variants": False, "expected_failures": False,
    })
    family = r.string(top["family"], "family")
    description = str(top.get("description", "")).strip()

    match = r.mapping(top["match"], "match", {"model_type": True, "config_has": False})
    model_types = r.names(match["model_type"], "match.model_type", None)
    config_has = r.names(match.get("config_has", []) or ["*"], "match.config_has", None)
    config_has = tuple(x for x in config_has if x != "*")

    build = _read_build(r, top["build"])
    remote = _read_remote(r, top["remote"]) if top.get("remote") is not None else None
    kv = _read_kv(r, top["kv"])

    cache = r.mapping(top["cache"], "cache", {"container": True, "argument": False})
    cache_spec = CacheSpec(
        container=r.string(cache["container"], "cache.container", names.CONTAINERS),
        argument=r.string(cache.get("argument", "auto"), "cache.argument", names.CACHE_ARGUMENTS),
    )
    conv = r.mapping(top["conventions"], "conventions", {"attention_mask": True, "position_ids": True})
    conventions = Conventions(
        attention_mask=r.string(conv["attention_mask"], "conventions.attention_mask", names.MASK_CONVENTIONS),
        position_ids=r.string(conv["position_ids"], "conventions.position_ids", names.POSITION_CONVENTIONS),
    )
    inputs = _read_inputs(r, top.get("inputs") or {})
    fixes = _read_fixes(r, top.get("fixes") or [])

    matrix = r.mapping(top.get("matrix") or {}, "matrix", {"num_virtual_tokens": False})
    nvt = (r.expr(matrix.get("num_virtual_tokens", 4), "matrix.num_virtual_tokens"),)

    variants = _read_variants(r, top.get("variants") or [], bool(fixes))
    variant_names = tuple(v.name for v in variants)
    expected = _read_expected(r, top.get("expected_failures") or [], variant_names)

    spec = ModelSpec(
        name=name, path=str(path), family=family, description=description,
        match_model_types=model_types, match_config_has=config_has, build=build, remote=remote,
        kv=kv, cache=cache_spec, conventions=conventions, inputs=inputs, fixes=fixes,
        num_virtual_tokens=nvt[0], variants=variants, expected_failures=expected,
    )
    if remote is not None and remote.weights == "reference" and build.code_source != "reference":
        r.fail("remote.weights", "'reference' needs a reference model in build", "use weights: own")
    _check_against_config(r, spec)
    return spec


def _read_build(r: _Reader, data) -> BuildSpec:
    b = r.mapping(data, "build", {
        "code_source": True, "class": True, "config_class": True, "config": True, "seed": False, "checkpoints": False,
    })
    source = r.string(b["code_source"], "build.code_source", ("transformers", "reference"))
    model_class = r.string(b["class"], "build.class")
    config_class = r.string(b["config_class"], "build.config_class")
    if not isinstance(b["config"], dict) or not b["config"]:
        r.fail("build.config", "expected a mapping of config values", "give the tiny config, e.g. hidden_size: 64")
    seed = b.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        r.fail("build.seed", f"expected an integer, got {seed!r}", "write e.g. seed: 0")
    checkpoints = b.get("checkpoints", []) or []
    if not isinstance(checkpoints, list) or not all(isinstance(c, str) for c in checkpoints):
        r.fail("build.checkpoints", "expected a list of checkpoint ids", "write e.g. [meta-llama/Llama-2-7b-hf]")
    if source == "reference":
        for fld, value in (("build.class", model_class), ("build.config_class", config_class)):
            module, _, attr = value.partition(":")
            if not attr:
                r.fail(fld, f"{value!r} does not say which module", "write module:Class, e.g. harness.reference.qwen:QWenConfig")
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):  # a missing parent package
                found = False
            if not found:
                r.fail(fld, f"module {module!r} not found", "name a module under harness.reference")
    return BuildSpec(source, model_class, config_class, dict(b["config"]), seed, tuple(checkpoints))


def _read_remote(r: _Reader, data) -> RemoteSpec:
    m = r.mapping(data, "remote", {"repo": True, "revision": True, "mirror": False, "auto_class": False,
                                   "transformers": False, "config": False, "weights": False, "sha256": False,
                                   "requires": False})
    repo = r.string(m["repo"], "remote.repo")
    if repo.count("/") != 1 or not all(part.strip() for part in repo.split("/")):
        r.fail("remote.repo", f"{repo!r} is not a hub repository id", "write owner/name, e.g. Qwen/Qwen-7B")
    revision = str(m["revision"])
    if not _SHA_RE.match(revision):
        r.fail("remote.revision", f"{revision!r} is not a pinned commit", "write the full 40-hex commit hash of the hub revision")
    auto_class = r.string(m.get("auto_class", "AutoModelForCausalLM"), "remote.auto_class", ("AutoModelForCausalLM", "AutoModel"))
    tf = r.specifier(m["transformers"], "remote.transformers") if m.get("transformers") else None
    overrides = m.get("config") or {}
    if not isinstance(overrides, dict):
        r.fail("remote.config", "expected a mapping", "write config overrides as key: value")
    mirror = r.string(m["mirror"], "remote.mirror") if m.get("mirror") else None
    weights = r.string(m.get("weights", "own"), "remote.weights", ("own", "reference"))
    hashes = m.get("sha256") or {}
    if not isinstance(hashes, dict) or not all(isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v)
                                               for v in hashes.values()):
        r.fail("remote.sha256", "expected file: <64-hex sha256> pairs",
               "write e.g. {modeling_qwen.py: <sha256 of that file at the pinned revision>}")
    requires = m.get("requires") or []
    if not isinstance(requires, list) or not all(isinstance(x, str) and re.fullmatch(r"[A-Za-z_]\w*(\.\w+)*", x)
                                                 for x in requires):
        r.fail("remote.requires", f"expected a list of module names, got {requires!r}",
               "write the modules the code imports, as imported, e.g. [einops, transformers_stream_generator]")
    return RemoteSpec(repo, revision, auto_class, tf, dict(overrides), mirror, weights, dict(hashes), tuple(requires))


def _read_kv(r: _Reader, data) -> KVSpec:
    kv = r.mapping(data, "kv", {"layout": True, "concat_axis": True, "layers": True, "heads": True, "head_dim": True,
                                "v_head_dim": False})
    try:
        layout = Layout.parse(kv["layout"])
    except LayoutError as e:
        r.fail("kv.layout", str(e), "write the four axes in the model's order, e.g. [b, s, h, d]")
    axis = kv["concat_axis"]
    if isinstance(axis, int) and not isinstance(axis, bool):
        r.fail("kv.concat_axis", f"a dim number ({axis}) is not accepted",
               "name the axis (s); its dim is derived from kv.layout")
    axis = r.string(axis, "kv.concat_axis")
    try:
        layout.dim(axis)
    except LayoutError:
        r.fail("kv.concat_axis", f"{axis!r} is not an axis of {layout}", "write s (the sequence axis)")
    if layout.axes[layout.dim(axis)] != "s":
        r.fail("kv.concat_axis", f"the past is concatenated along the sequence, not {axis!r}",
               "write concat_axis: s (the dim is derived from kv.layout)")
    return KVSpec(
        layout=layout, concat_axis=axis,
        layers=r.exprs(kv["layers"], "kv.layers"),
        heads=r.exprs(kv["heads"], "kv.heads"),
        head_dim=r.exprs(kv["head_dim"], "kv.head_dim"),
        v_head_dim=r.exprs(kv["v_head_dim"], "kv.v_head_dim") if kv.get("v_head_dim") is not None else None,
    )


def _read_inputs(r: _Reader, data) -> InputSpec:
    m = r.mapping(data, "inputs", {"vocab_limit": False, "insert_tokens": False, "insert_at": False})
    limit = r.expr(m["vocab_limit"], "inputs.vocab_limit") if "vocab_limit" in m else None
    insert = r.exprs(m["insert_tokens"], "inputs.insert_tokens") if "insert_tokens" in m else ()
    at = m.get("insert_at", -1)
    if not isinstance(at, int) or isinstance(at, bool):
        r.fail("inputs.insert_at", f"expected an integer index, got {at!r}", "write e.g. insert_at: -3")
    return InputSpec(limit, insert, at)


def _read_fixes(r: _Reader, data) -> tuple[Fix, ...]:
    if not isinstance(data, list):
        r.fail("fixes", "expected a list", "write fixes as a list of '- name: ...' entries")
    out = []
    for i, item in enumerate(data):
        f = r.mapping(item, f"fixes[{i}]", {"name": True, "module_class": True, "reason": True})
        out.append(Fix(
            name=r.string(f["name"], f"fixes[{i}].name", names.FIXES),
            module_class=r.string(f["module_class"], f"fixes[{i}].module_class"),
            reason=r.string(f["reason"], f"fixes[{i}].reason"),
        ))
    return tuple(out)


def _read_variants(r: _Reader, data, has_fixes: bool) -> tuple[Variant, ...]:
    if not isinstance(data, list):
        r.fail("variants", "expected a list", "write variants as a list of '- name: ...' entries")
    out = [Variant(DEFAULT_VARIANT)]
    for i, item in enumerate(data):
        fld = f"variants[{i}]"
        v = r.mapping(item, fld, {"name": True, "description": False, "num_virtual_tokens": False,
                                  "apply_fixes": False, "adapters": False})
        name = r.string(v["name"], f"{fld}.name")
        if not _NAME_RE.match(name) or name == DEFAULT_VARIANT or name in {x.name for x in out}:
            r.fail(f"{fld}.name", f"{name!r} is reserved, repeated or not a valid name",
                   "use a new lower-case name of letters, digits and '_'")
        apply_fixes = v.get("apply_fixes", True)
        if not isinstance(apply_fixes, bool):
            r.fail(f"{fld}.apply_fixes", f"expected true or false, got {apply_fixes!r}", "write apply_fixes: false")
        if not apply_fixes and not has_fixes:
            r.fail(f"{fld}.apply_fixes", "the spec declares no fixes to leave off", "remove apply_fixes or declare fixes")
        nvt = r.expr(v["num_virtual_tokens"], f"{fld}.num_virtual_tokens") if "num_virtual_tokens" in v else None
        adapters = r.names(v.get("adapters", list(names.ADAPTERS)), f"{fld}.adapters", names.ADAPTERS)
        out.append(Variant(name, str(v.get("description", "")), nvt, apply_fixes,
                           names.ADAPTERS if "*" in adapters else adapters))
    return tuple(out)


def _read_expected(r: _Reader, data, variant_names) -> tuple[ExpectedFailure, ...]:
    if not isinstance(data, list):
        r.fail("expected_failures", "expected a list", "write a list of '- adapter: ... check: ... reason: ...' entries")
    out = []
    for i, item in enumerate(data):
        fld = f"expected_failures[{i}]"
        e = r.mapping(item, fld, {"adapter": True, "check": True, "variant": False, "code_source": False,
                                  "transformers": False, "peft": False, "torch": False, "raises": False,
                                  "dtype": False, "reason": True})
        raises = None
        if "raises" in e:  # any non-empty text; whitespace counts (it is matched as written)
            if not isinstance(e["raises"], str) or not e["raises"].strip():
                r.fail(f"{fld}.raises", f"expected the text of the error, got {e['raises']!r}",
                       "write a fragment of the expected error message, e.g. raises: \"not subscriptable\", "
                       "or remove raises to cover any failure")
            raises = e["raises"]
        versions = tuple((pkg, r.specifier(e[pkg], f"{fld}.{pkg}")) for pkg in ("transformers", "peft", "torch") if e.get(pkg))
        out.append(ExpectedFailure(
            adapters=r.names(e["adapter"], f"{fld}.adapter", names.ADAPTERS),
            checks=r.names(e["check"], f"{fld}.check", names.CHECKS),
            variants=r.names(e.get("variant", "*"), f"{fld}.variant", variant_names),
            code_sources=r.names(e.get("code_source", "*"), f"{fld}.code_source", names.CODE_SOURCES),
            versions=versions,
            reason=r.string(e["reason"], f"{fld}.reason"),
            raises=raises,
            dtypes=r.names(e.get("dtype", "*"), f"{fld}.dtype", names.DTYPES),
        ))
    return tuple(out)


def _check_against_config(r: _Reader, spec: ModelSpec) -> None:
    """Resolve the classes and evaluate every size expression on the tiny config, so a wrong
    class or attribute is an error now, naming its field, not a crash in the middle of a run."""
    from .expr import first_applicable
    from .models import resolve_class

    classes = {}
    for fld, name in (("build.config_class", spec.build.config_class), ("build.class", spec.build.model_class)):
        try:
            classes[fld] = resolve_class(spec.build.code_source, name)
        except Exception as e:  # noqa: BLE001 - missing, misspelt, or a module that fails on import
            r.fail(fld, f"{name!r} cannot be found ({e})",
                   "name a class of transformers, or module:Class for a reference model")
    known = _config_keys(classes["build.config_class"])
    stray = [key for key in spec.build.config if known and key not in known]
    try:
        config = classes["build.config_class"](**spec.build.config)
    except Exception as e:  # noqa: BLE001 - any failure here is the spec's build.config
        if stray:  # a misspelt key is the likelier cause
            config = None
        else:
            r.fail("build.config", f"{spec.build.config_class} rejected it: {type(e).__name__}: {e}",
                   "use the config class's own attribute names and valid values")
    # A key the config class does not declare may still be read by the model's code (Qwen3-MoE reads
    # getattr(config, "head_dim", ...)): measured by building the model on the meta device and
    # recording which of them it reads. Only a key nothing reads is refused (typos stay errors).
    read = _keys_read_by_model(classes["build.class"], config, stray) if stray and config is not None else set()
    for key in stray:
        if key not in read:
            near = difflib.get_close_matches(str(key), sorted(known | read), n=1)
            hint = f"did you mean {near[0]!r}?" if near else f"see {spec.build.config_class}'s arguments"
            r.fail(f"build.config.{key}", f"{spec.build.config_class} has no such setting and "
                   f"{spec.build.model_class} does not read it (it would be kept as a stray attribute and change "
                   f"nothing)", f"correct or remove it ({hint})")

    def positive(fld, candidates):
        try:
            value = first_applicable(candidates, config)
        except (ExprError, ValueError, TypeError, ZeroDivisionError) as e:
            r.fail(fld, f"cannot be read from the config: {e}", f"name integer attributes that {spec.build.config_class} has")
        if value <= 0:
            r.fail(fld, f"evaluates to {value}", "point it at a positive size")

    for fld in ("layers", "heads", "head_dim", "v_head_dim"):
        if getattr(spec.kv, fld) is not None:
            positive(f"kv.{fld}", getattr(spec.kv, fld))
    positive("matrix.num_virtual_tokens", (spec.num_virtual_tokens,))
    for i, v in enumerate(spec.variants[1:]):
        if v.num_virtual_tokens is not None:
            positive(f"variants[{i}].num_virtual_tokens", (v.num_virtual_tokens,))
    if spec.inputs.vocab_limit is not None:
        positive("inputs.vocab_limit", (spec.inputs.vocab_limit,))
    for i, tok in enumerate(spec.inputs.insert_tokens):
        if not tok.applies(config):
            r.fail(f"inputs.insert_tokens[{i}]", f"{tok} is not set in the config", "name a token id attribute of the config")


def _keys_read_by_model(model_class, config, keys) -> set[str]:
    """Which of ``keys`` the model's code reads from its config while it is built (on the meta
    device: shapes only, nothing allocated). Empty when the model cannot be built there."""
    import torch

    wanted, read = set(keys), set()
    base = type(config)

    class Traced(base):  # the same config, noting reads of the keys asked about
        def __getattribute__(self, name):
            if name in wanted:
                read.add(name)
            return super().__getattribute__(name)

    Traced.__name__ = Traced.__qualname__ = base.__name__
    traced = copy.copy(config)
    try:
        traced.__class__ = Traced
        with torch.device("meta"):
            model_class(traced)
    except Exception:  # noqa: BLE001 - cannot tell: treat every key as unread (the typo check stands)
        return set()
    return read


def _config_keys(config_class) -> set[str]:
    """Every setting a config class knows: its arguments, its defaults' keys, its aliases."""
    import inspect

    keys = {n for n, p in inspect.signature(config_class.__init__).parameters.items()
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and n != "self"}
    try:
        keys |= set(config_class().to_dict())
    except Exception:  # noqa: BLE001 - a class without usable defaults: its arguments must do
        pass
    keys |= set(getattr(config_class, "attribute_map", {}) or {})
    keys |= {"torch_dtype", "dtype"}  # transformers 5 renamed torch_dtype to dtype; both are accepted
    return keys


def build_config(spec: ModelSpec):
    """The tiny config object of a spec (no weights)."""
    from .models import (
        resolve_class,  # local: keeps `validate` importable without torch model code
    )

    cls = resolve_class(spec.build.code_source, spec.build.config_class)
    return cls(**spec.build.config)


# ----------------------------------------------------------------------------- discovery
def _looks_like_spec(path: Path) -> bool:
    """A file in a spec folder that is meant as a spec: .yaml/.yml in any letter case (so a
    ``Mistral.YAML`` is refused by name instead of silently ignored), hidden files excepted."""
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in SPEC_SUFFIXES


def spec_paths(paths=None) -> list[Path]:
    """Spec files under the given files/folders (default: the repo's model_specs/)."""
    out: list[Path] = []
    for p in [Path(x) for x in (paths or [SPEC_DIR])]:
        if p.is_dir():
            out.extend(sorted(x for x in p.iterdir() if _looks_like_spec(x)))
        else:
            out.append(p)
    return out


def load_specs_report(paths=None, build: bool = False,
                      memory_bytes: int | None = None) -> tuple[list[ModelSpec], list[SpecError]]:
    """Every spec under the given files/folders (default: model_specs/), never stopping at a bad one.
    With ``build``, each spec that loads must also pass check_buildable (its model is built and run
    once: about 0.05 s a spec after a few seconds of imports) or it is an error too.

    Returns (good specs, errors), each in file order; one bad file costs only its own spec. Errors
    besides each file's own: a given path that does not exist (field ``(file)``), a given folder with
    no spec files (``(folder)``), and two files giving one spec name (``x.yaml`` + ``x.yml``, or one
    stem in two folders): both are refused (``(file name)``), each naming the other, since keeping
    either would silently drop or mix the other's rows."""
    errors: list[SpecError] = []
    files: list[Path] = []
    seen: set[Path] = set()
    for given in [Path(x) for x in (paths or [SPEC_DIR])]:
        if not given.exists():
            errors.append(SpecError(given, "(file)", "no such file or folder",
                                    "check the path: give a spec file or a folder of them, e.g. model_specs/"))
            continue
        found = spec_paths([given])
        if given.is_dir() and not found:
            errors.append(SpecError(given, "(folder)", f"no spec files found in this folder (*{', *'.join(SPEC_SUFFIXES)})",
                                    "give the folder that holds the spec files, e.g. model_specs/"))
        for path in found:
            key = path.resolve()
            if key not in seen:  # the same file given twice (folder and file) is one spec, not a clash
                seen.add(key)
                files.append(path)

    by_name: dict[str, list[Path]] = {}
    for path in files:
        by_name.setdefault(path.stem, []).append(path)

    specs: list[ModelSpec] = []
    for path in files:
        others = [str(o) for o in by_name[path.stem] if o != path]
        if others:
            errors.append(SpecError(
                path, "(file name)", f"spec name {path.stem!r} is also given by {', '.join(others)}",
                "rename or remove one of them: the file stem is the spec name and must be unique "
                "(x.yaml and x.yml are the same spec)"))
            continue
        try:
            spec = load_spec(path)
            if build:
                check_buildable(spec, memory_bytes)
            specs.append(spec)
        except SpecError as e:
            errors.append(e)
        except Exception as e:  # noqa: BLE001 - a loader bug must still cost only this file
            errors.append(SpecError(path, "(file)", f"the loader failed: {type(e).__name__}: {e}",
                                    "run `prefix-compat validate` on this file and report the traceback as a bug"))
    errors.sort(key=lambda e: _order(e, files))
    return specs, errors


def _order(error: SpecError, files: list[Path]) -> int:
    """Errors in file order (path errors, which name no discovered file, first)."""
    for i, path in enumerate(files):
        if str(path) == error.path:
            return i + 1
    return 0


def load_specs(paths=None) -> list[ModelSpec]:
    """Like load_specs_report, but raises the first error (for callers that need every spec)."""
    specs, errors = load_specs_report(paths)
    if errors:
        raise errors[0]
    return specs


def find_spec_for(config, specs=None) -> ModelSpec:
    """The spec whose ``match`` section fits a model config (first by file name on ties). Of the shipped
    specs only those that load here count: one naming a config class this transformers lacks (Cohere's under
    4.37) must not stop the lookup for every other model; if none matches, the error lists them."""
    unloaded: list[SpecError] = []
    if specs is None:
        specs, unloaded = load_specs_report()
    hits = [s for s in specs if s.matches_config(config)]
    if hits and hits[0].not_applicable:
        raise LookupError(f"prefix tuning does not apply to model_type {getattr(config, 'model_type', None)!r} "
                          f"({hits[0].path}): {hits[0].not_applicable}")
    if not hits:
        known = ", ".join(sorted({t for s in specs for t in s.match_model_types}))
        raise LookupError(
            f"no spec in model_specs/ matches model_type {getattr(config, 'model_type', None)!r} "
            f"(known: {known}); add a spec file or pass spec=..."
            + (f"; {len(unloaded)} spec file(s) did not load here: "
               + "; ".join(f"{Path(e.path).name}: {e.field}: {e.problem}" for e in unloaded[:5]) if unloaded else "")
        )
    return hits[0]


# ----------------------------------------------------------------------------- buildability
# load_spec stays cheap (no model is built); `validate` and the matrix call this once per spec.
_FLOAT32_BYTES = 4
# The matrix holds each model twice at once: the one a worker builds and the copy each cell gets.
_COPIES_HELD = 2
# Fixes for build errors whose cause is a well-known config mistake (generic torch / transformers
# messages, not model names).
_BUILD_HINTS = (
    ("Padding_idx must be within num_embeddings",
     "set pad_token_id below vocab_size (e.g. pad_token_id: 0): the config class's default is above the tiny vocab"),
    ("must be divisible by", "make hidden_size a multiple of num_attention_heads (and of num_key_value_heads)"),
)


def available_memory_bytes() -> int | None:
    """Memory this machine can give a new allocation now: MemAvailable from /proc/meminfo
    (counts reclaimable cache, unlike free pages), else sysconf's free pages; None if unknown."""
    import os

    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # reported in kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _gib(n: int) -> str:
    return f"{n / 2 ** 30:.3g} GiB"


def _estimate_size(spec: ModelSpec, config) -> tuple[int, int] | None:
    """(parameters, bytes in float32) of the spec's model, built on the meta device: shapes only,
    nothing allocated, so a 70B config costs milliseconds. None when the class cannot be built
    there (code that reads tensor values in __init__); the real build then runs unguarded."""
    import torch

    from .models import resolve_class

    model_cls = resolve_class(spec.build.code_source, spec.build.model_class)
    try:
        with torch.device("meta"):
            model = model_cls(config)
    except Exception:  # noqa: BLE001 - the real build below reports a genuine build error
        return None
    params = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() * (_FLOAT32_BYTES if b.is_floating_point() else b.element_size()) for b in model.buffers())
    return params, params * _FLOAT32_BYTES + buffers


def _tell_apart_sizes(dims, n_inserts: int) -> tuple[int, int]:
    """Batch and length for the probe forward: 2 x 3 unless that collides with the spec's heads or
    head dim, so that every axis of the cache has a size of its own and a swapped layout shows."""
    taken = {dims.heads, dims.head_dim, dims.v_head_dim}
    batch = 2
    while batch in taken:
        batch += 1
    length = max(3, n_inserts + 1)
    while length in taken | {batch}:
        length += 1
    return batch, length


def _attributes_equal(config, value: int) -> list[str]:
    """Integer config attributes equal to a measured size: the likely right expression."""
    try:
        items = config.to_dict().items()
    except Exception:  # noqa: BLE001 - a config without to_dict: no hint
        return []
    return sorted(k for k, v in items if isinstance(v, int) and not isinstance(v, bool) and v == value
                  and not k.endswith(("_id", "_ids")))[:4]  # token ids are never sizes


def _given(value: int, candidates, config) -> str:
    """``4 (num_attention_heads)``: the value and the expression it came from (a literal alone)."""
    text = next((str(c) for c in candidates if c.applies(config)), "?")
    return str(value) if text == str(value) else f"{value} ({text})"


def _compare_kv(spec: ModelSpec, config, dims, batch: int, length: int, which: str, shape: tuple) -> None:
    """One layer's K (or V) shape against the spec's layout and sizes; a mismatch names its field
    (V's head dim is kv.v_head_dim when the spec gives one, else kv.head_dim)."""
    r = _Reader(Path(spec.path))
    layout = spec.kv.layout
    own_v = which == "V" and spec.kv.v_head_dim is not None
    d_field, d_exprs = ("kv.v_head_dim", spec.kv.v_head_dim) if own_v else ("kv.head_dim", spec.kv.head_dim)
    head_dim = dims.v_head_dim if which == "V" else dims.head_dim
    sizes = {"b": batch, "s": length, "h": dims.heads, "d": head_dim}
    want = layout.shape(**sizes)
    if len(shape) != 4:
        r.fail("kv.layout", f"the spec gives {layout} but the model caches {len(shape)}-D {which} tensors "
               f"(shape {shape})", "this cache is not one K/V tensor of four axes per layer; it needs a new container")
    if tuple(shape) == want:
        return
    if sorted(shape) == sorted(want):  # the right sizes in another order: the layout is wrong
        from itertools import permutations

        fits = [f"[{', '.join(p)}]" for p in permutations(AXES) if tuple(sizes[a] for a in p) == tuple(shape)]
        r.fail("kv.layout", f"the spec gives {layout} (a {which} of shape {want} for batch {batch}, {length} tokens), "
               f"the model's cache holds {which} of shape {tuple(shape)}",
               f"write layout: {fits[0] if fits else 'the order the model uses'}")
    at = {a: shape[layout.dim(a)] for a in AXES}  # measured sizes, read with the spec's layout
    if at["b"] == batch and at["s"] == length:  # batch and sequence sit where the layout says
        for axis, fld, candidates in (("h", "kv.heads", spec.kv.heads), ("d", d_field, d_exprs)):
            if at[axis] != sizes[axis]:
                names_ = _attributes_equal(config, at[axis])
                hint = f" (config attributes equal to {at[axis]}: {', '.join(names_)})" if names_ else ""
                if fld == "kv.head_dim" and which == "V":  # V alone differs: MLA-style, its own field
                    fld, hint = "kv.v_head_dim", hint + "; K and V head dims differ: give V's in kv.v_head_dim"
                r.fail(fld, f"the spec gives {_given(sizes[axis], candidates, config)}, the model's cache "
                       f"measured {at[axis]} ({which} of shape {tuple(shape)} in {layout})",
                       f"point {fld} at the config value the cache uses{hint}")
    r.fail("kv.layout", f"the spec gives {layout} with heads {dims.heads} and head dim {head_dim} (a {which} of "
           f"shape {want} for batch {batch}, {length} tokens); the model's cache holds {which} of shape "
           f"{tuple(shape)}, which no order of those sizes gives",
           f"check kv.layout, kv.heads and {d_field} against the model's attention code")


def check_buildable(spec: ModelSpec, memory_bytes: int | None = None) -> dict:
    """Build the spec's tiny model and check its cache against the spec; raise a SpecError naming
    the field otherwise. What `validate` runs (load_spec itself builds nothing).

    1. Size, without allocating (meta device): refused when the matrix's copies of the model would
       not fit ``memory_bytes`` (default: this machine's available memory).
    2. The real model (CPU, float32): a build error is an error on build.config, with the fix.
    3. One forward with a cache on random rows (batch x length chosen apart from the head sizes,
       the spec's ``inputs`` respected), through the spec's contract (mask, positions, argument).
    4. The returned cache: its layer count, and every layer's K and V shape against kv.layout with
       kv.heads and kv.head_dim as the spec's expressions give them.

    Returns what was measured: params, bytes, layers, k_shape, v_shape (layer 0), tokens, seconds."""
    import inspect
    import time

    import torch

    from harness.core.inputs import make_inputs

    from .containers import container, returned_cache
    from .contract import CacheContract
    from .conventions import MASKS, POSITIONS
    from .models import build_model, kv_dims

    if spec.not_applicable:  # the claim "no attention KV cache" is measured instead
        from .applicable import measure

        return measure(spec)
    started = time.perf_counter()
    r = _Reader(Path(spec.path))
    config = build_config(spec)  # load_spec already built it once, so this cannot fail here
    measured: dict = {"params": None, "bytes": None}
    size = _estimate_size(spec, config)
    if size is not None:
        params, nbytes = size
        measured.update(params=params, bytes=nbytes)
        memory = available_memory_bytes() if memory_bytes is None else memory_bytes
        if memory is not None and nbytes * _COPIES_HELD > memory:
            r.fail("build.config", f"the model needs about {_gib(nbytes)} ({params:,} parameters in float32; the "
                   f"matrix holds {_COPIES_HELD} copies: {_gib(nbytes * _COPIES_HELD)}) but this machine has "
                   f"{_gib(memory)} available", "make the tiny config smaller (a few layers, hidden_size 64, vocab 256)")

    try:
        model = build_model(spec, code_source=spec.build.code_source, device="cpu", dtype=torch.float32)
    except Exception as e:  # noqa: BLE001 - any build failure is the spec's build section
        text = f"{type(e).__name__}: {e}"
        fix = next((f for key, f in _BUILD_HINTS if key in text),
                   f"give {spec.build.config_class} values its model accepts")
        r.fail("build.config", f"{spec.build.model_class} cannot be built from it: {text}", fix)

    declared = spec.cache.argument
    params_ = inspect.signature(model.forward).parameters
    if declared != "auto" and declared not in params_:
        # with **kwargs the model would swallow the cache silently, so the name must be a parameter
        r.fail("cache.argument", f"{type(model).__name__}.forward has no {declared!r} parameter",
               "write argument: auto (the harness then picks cache= or past_key_values= by the signature)")

    dims = kv_dims(spec, model.config)
    batch, length = _tell_apart_sizes(dims, len(spec.inputs.insert_tokens))
    generator = torch.Generator().manual_seed(0)
    ids, mask = make_inputs(spec, model.config, batch, length, generator, "cpu")
    for fld, table, name in (("conventions.attention_mask", MASKS, spec.conventions.attention_mask),
                             ("conventions.position_ids", POSITIONS, spec.conventions.position_ids)):
        try:
            table[name](model.config, 0, ids, mask, length)
        except Exception as e:  # noqa: BLE001 - the convention does not fit this model or its inputs
            r.fail(fld, f"{name} cannot be built for this model: {type(e).__name__}: {e}",
                   "choose the convention of this model's family (see harness/core/conventions.py), "
                   "or give the tokens it needs in inputs.insert_tokens")
    contract = CacheContract.for_model(model, spec)
    try:
        with torch.no_grad():
            out = model(**contract.model_kwargs(ids, ids, mask, 0))
    except Exception as e:  # noqa: BLE001 - which field is wrong cannot be told from here
        r.fail("(forward)", f"one forward with a cache on {batch}x{length} tokens failed: {type(e).__name__}: {e}",
               "check build.config, conventions and inputs against the model's forward")

    cache = returned_cache(out)
    if cache is None:
        r.fail("cache.container", "the forward returned no cache with use_cache=True",
               "this model keeps no KV cache the harness can reach: prefix tuning does not apply to it")
    try:
        pairs = [(tuple(k.shape), tuple(v.shape)) for k, v in container(spec.cache.container).unpack(cache)]
    except Exception as e:  # noqa: BLE001 - not per-layer (K, V) tensors: not a cache this spec describes
        r.fail("cache.container", f"the returned {type(cache).__name__} cannot be read as per-layer K/V tensors "
               f"({type(e).__name__}: {e})", "name the container the model uses, or add one in harness/core/containers/")
    if len(pairs) != dims.layers:
        names_ = _attributes_equal(model.config, len(pairs))
        hint = f" (config attributes equal to {len(pairs)}: {', '.join(names_)})" if names_ else ""
        r.fail("kv.layers", f"the spec gives {_given(dims.layers, spec.kv.layers, model.config)}, the model's "
               f"cache measured {len(pairs)} layers", f"point kv.layers at the config value the cache uses{hint}")
    for k_shape, v_shape in pairs:
        _compare_kv(spec, model.config, dims, batch, length, "K", k_shape)
        _compare_kv(spec, model.config, dims, batch, length, "V", v_shape)
    measured.update(layers=len(pairs), k_shape=pairs[0][0], v_shape=pairs[0][1],
                    tokens=(batch, length), seconds=round(time.perf_counter() - started, 3))
    return measured
