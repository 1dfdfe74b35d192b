"""Model specs: one declarative YAML file per architecture in ``model_specs/``.

A spec loads into frozen, typed objects. Unknown keys, wrong types and inconsistent values are
errors that name the file, the field and the fix, so a user adding a model learns what to write
without reading this code. See ``model_specs/README.md`` for the format.
"""
from __future__ import annotations

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
from .layout import Layout, LayoutError

SPEC_DIR = Path(__file__).resolve().parent.parent / "model_specs"
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
    head_dim: tuple[ConfigExpr, ...]

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

    def matches(self, adapter: str, check: str, variant: str, code_source: str, versions: dict[str, str]) -> bool:
        def hit(value, allowed):
            return "*" in allowed or value in allowed

        if not (hit(adapter, self.adapters) and hit(check, self.checks) and hit(variant, self.variants)):
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

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)

    def expected_failure(self, adapter, check, variant, code_source, versions) -> ExpectedFailure | None:
        for ef in self.expected_failures:
            if ef.matches(adapter, check, variant, code_source, versions):
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
                                   "transformers": False, "config": False, "weights": False, "sha256": False})
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
    return RemoteSpec(repo, revision, auto_class, tf, dict(overrides), mirror, weights, dict(hashes))


def _read_kv(r: _Reader, data) -> KVSpec:
    kv = r.mapping(data, "kv", {"layout": True, "concat_axis": True, "layers": True, "heads": True, "head_dim": True})
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
                                  "transformers": False, "peft": False, "torch": False, "reason": True})
        versions = tuple((pkg, r.specifier(e[pkg], f"{fld}.{pkg}")) for pkg in ("transformers", "peft", "torch") if e.get(pkg))
        out.append(ExpectedFailure(
            adapters=r.names(e["adapter"], f"{fld}.adapter", names.ADAPTERS),
            checks=r.names(e["check"], f"{fld}.check", names.CHECKS),
            variants=r.names(e.get("variant", "*"), f"{fld}.variant", variant_names),
            code_sources=r.names(e.get("code_source", "*"), f"{fld}.code_source", names.CODE_SOURCES),
            versions=versions,
            reason=r.string(e["reason"], f"{fld}.reason"),
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
        except (ImportError, AttributeError) as e:
            r.fail(fld, f"{name!r} cannot be found ({e})",
                   "name a class of transformers, or module:Class for a reference model")
    known = _config_keys(classes["build.config_class"])
    for key in spec.build.config:
        if known and key not in known:
            near = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f"did you mean {near[0]!r}?" if near else f"see {spec.build.config_class}'s arguments"
            r.fail(f"build.config.{key}", f"{spec.build.config_class} has no such setting (it would be kept as a "
                   f"stray attribute and change nothing)", f"correct or remove it ({hint})")
    try:
        config = classes["build.config_class"](**spec.build.config)
    except Exception as e:  # noqa: BLE001 - any failure here is the spec's build.config
        r.fail("build.config", f"{spec.build.config_class} rejected it: {type(e).__name__}: {e}",
               "use the config class's own attribute names and valid values")

    def positive(fld, candidates):
        try:
            value = first_applicable(candidates, config)
        except (ExprError, ValueError, TypeError, ZeroDivisionError) as e:
            r.fail(fld, f"cannot be read from the config: {e}", f"name integer attributes that {spec.build.config_class} has")
        if value <= 0:
            r.fail(fld, f"evaluates to {value}", "point it at a positive size")

    for fld in ("layers", "heads", "head_dim"):
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
    from .models import resolve_class  # local: keeps `validate` importable without torch model code

    cls = resolve_class(spec.build.code_source, spec.build.config_class)
    return cls(**spec.build.config)


# ----------------------------------------------------------------------------- discovery
def spec_paths(paths=None) -> list[Path]:
    """Spec files under the given files/folders (default: the repo's model_specs/)."""
    out: list[Path] = []
    for p in [Path(x) for x in (paths or [SPEC_DIR])]:
        if p.is_dir():
            out.extend(sorted(x for x in p.iterdir() if x.suffix in SPEC_SUFFIXES))
        else:
            out.append(p)
    return out


def load_specs(paths=None) -> list[ModelSpec]:
    return [load_spec(p) for p in spec_paths(paths)]


def load_specs_report(paths=None) -> tuple[list[ModelSpec], list[SpecError]]:
    """Every loadable spec, and one SpecError per file that is not: one bad file never removes
    the others."""
    specs, errors = [], []
    for p in spec_paths(paths):
        try:
            specs.append(load_spec(p))
        except SpecError as e:
            errors.append(e)
    return specs, errors


def find_spec_for(config, specs=None) -> ModelSpec:
    """The spec whose ``match`` section fits a model config (first by file name on ties)."""
    specs = specs if specs is not None else load_specs()
    hits = [s for s in specs if s.matches_config(config)]
    if not hits:
        known = ", ".join(sorted({t for s in specs for t in s.match_model_types}))
        raise LookupError(
            f"no spec in model_specs/ matches model_type {getattr(config, 'model_type', None)!r} "
            f"(known: {known}); add a spec file or pass spec=..."
        )
    return hits[0]
