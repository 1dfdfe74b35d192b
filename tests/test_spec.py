"""Spec loading: every kind of bad spec is a SpecError naming the file, the field and a fix.

Bad specs are built by mutating a known-good spec from model_specs/ (loaded as a plain dict),
writing it under tmp_path and loading it; each case asserts the exact field the error names.
"""
from __future__ import annotations

import copy
import dataclasses
import shutil
from pathlib import Path

import pytest
import yaml

from harness.cli import main as cli_main
from harness.core import names
from harness.core.spec import (
    SPEC_DIR,
    ModelSpec,
    SpecError,
    build_config,
    find_spec_for,
    load_spec,
    load_specs,
    spec_paths,
)

BASES = {name: yaml.safe_load((SPEC_DIR / f"{name}.yaml").read_text()) for name in ("llama", "qwen", "chatglm")}


# ----------------------------------------------------------------------------- helpers
def _parent(data, dotted: str):
    """The container holding the last part of ``dotted`` ("kv.layout", "variants.1.name")."""
    *head, last = dotted.split(".")
    cur = data
    for part in head:
        cur = cur[int(part)] if isinstance(cur, list) else cur[part]
    return cur, (int(last) if isinstance(cur, list) else last)


def set_(dotted, value):
    def mutate(data):
        parent, key = _parent(data, dotted)
        parent[key] = value

    return mutate


def pop(dotted):
    def mutate(data):
        parent, key = _parent(data, dotted)
        del parent[key]

    return mutate


def rename(dotted, new_key):
    def mutate(data):
        parent, key = _parent(data, dotted)
        parent[new_key] = parent.pop(key)

    return mutate


def write(tmp_path: Path, data, name: str = "spec") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def mutated(tmp_path: Path, base: str, mutate, name: str | None = None) -> Path:
    data = copy.deepcopy(BASES[base])
    mutate(data)
    return write(tmp_path, data, name or base)


def expect_error(path: Path, field: str, *fragments: str) -> SpecError:
    """load_spec(path) raises a SpecError for exactly ``field``, with a fix and the given words."""
    with pytest.raises(SpecError) as info:
        load_spec(path)
    e = info.value
    assert e.field == field, f"expected field {field!r}, got {e.field!r}: {e}"
    assert e.path == str(path)
    assert e.problem.strip(), f"no problem stated: {e}"
    assert e.fix.strip(), f"no fix given: {e}"
    assert str(e) == f"{path}: {field}: {e.problem}. Fix: {e.fix}"
    for fragment in fragments:
        assert fragment in str(e), f"{fragment!r} not in {str(e)!r}"
    return e


# ----------------------------------------------------------------------------- bad specs, by mutation
# (id, base spec, mutation, field the error must name, words the message must contain)
CASES = [
    # --- keys: unknown (with did-you-mean), missing, wrong type
    ("unknown_top_key_hint", "llama", rename("family", "fmaily"), "fmaily", ["unknown key", "did you mean 'family'"]),
    ("unknown_top_key_no_hint", "llama", set_("zzzz", 1), "zzzz", ["unknown key", "allowed keys:"]),
    ("unknown_nested_key_hint", "llama", rename("kv.layout", "layuot"), "kv.layuot", ["did you mean 'layout'"]),
    ("unknown_build_key_hint", "llama", rename("build.config", "confg"), "build.confg", ["did you mean 'config'"]),
    ("unknown_variant_key_hint", "qwen", rename("variants.0.apply_fixes", "apply_fix"), "variants[0].apply_fix",
     ["did you mean 'apply_fixes'"]),
    ("missing_family", "llama", pop("family"), "family", ["missing", "add 'family:'"]),
    ("missing_match", "llama", pop("match"), "match", ["missing"]),
    ("missing_kv", "llama", pop("kv"), "kv", ["missing"]),
    ("missing_kv_layout", "llama", pop("kv.layout"), "kv.layout", ["missing", "add 'layout:' under kv"]),
    ("missing_kv_concat_axis", "llama", pop("kv.concat_axis"), "kv.concat_axis", ["missing"]),
    ("missing_build_class", "llama", pop("build.class"), "build.class", ["missing", "add 'class:' under build"]),
    ("missing_build_config", "llama", pop("build.config"), "build.config", ["missing"]),
    ("missing_cache_container", "llama", pop("cache.container"), "cache.container", ["missing"]),
    ("missing_conventions_position_ids", "llama", pop("conventions.position_ids"), "conventions.position_ids", ["missing"]),
    ("missing_match_model_type", "llama", pop("match.model_type"), "match.model_type", ["missing"]),
    ("missing_fix_module_class", "qwen", pop("fixes.0.module_class"), "fixes[0].module_class", ["missing"]),
    ("missing_remote_revision", "qwen", pop("remote.revision"), "remote.revision", ["missing"]),
    ("missing_expected_failure_reason", "llama", pop("expected_failures.0.reason"), "expected_failures[0].reason",
     ["missing"]),
    ("family_not_string", "llama", set_("family", 123), "family", ["expected a non-empty string"]),
    ("kv_not_mapping", "llama", set_("kv", ["b", "h", "s", "d"]), "kv", ["expected a mapping"]),
    ("fixes_not_list", "qwen", set_("fixes", {"name": "causal_mask_with_past"}), "fixes", ["expected a list"]),
    ("variants_not_list", "qwen", set_("variants", {"name": "x"}), "variants", ["expected a list"]),
    # --- layouts
    ("layout_missing_axis", "llama", set_("kv.layout", ["b", "h", "d"]), "kv.layout", ["missing ['s']"]),
    ("layout_repeated_axis", "llama", set_("kv.layout", ["b", "h", "s", "d", "s"]), "kv.layout", ["repeated ['s']"]),
    ("layout_repeated_axis_4", "llama", set_("kv.layout", ["b", "s", "s", "d"]), "kv.layout", ["exactly once"]),
    ("layout_g_and_h", "llama", set_("kv.layout", ["b", "g", "h", "s", "d"]), "kv.layout", ["repeated ['h']"]),
    ("layout_unknown_axis", "llama", set_("kv.layout", ["b", "x", "s", "d"]), "kv.layout", ["unknown axis 'x'"]),
    ("layout_unknown_axis_string", "llama", set_("kv.layout", "bhtd"), "kv.layout", ["unknown axis 't'"]),
    ("layout_not_list", "llama", set_("kv.layout", {"b": 0}), "kv.layout", ["list of axis names"]),
    ("concat_axis_number", "llama", set_("kv.concat_axis", 2), "kv.concat_axis",
     ["dim number (2) is not accepted", "derived from kv.layout"]),
    ("concat_axis_number_zero", "chatglm", set_("kv.concat_axis", 0), "kv.concat_axis", ["derived from kv.layout"]),
    ("concat_axis_not_sequence", "llama", set_("kv.concat_axis", "h"), "kv.concat_axis",
     ["concatenated along the sequence, not 'h'", "concat_axis: s"]),
    ("concat_axis_not_sequence_g", "chatglm", set_("kv.concat_axis", "g"), "kv.concat_axis", ["not 'g'"]),
    ("concat_axis_not_in_layout", "llama", set_("kv.concat_axis", "t"), "kv.concat_axis", ["'t' is not an axis of [b, h, s, d]"]),
    ("concat_axis_bool", "llama", set_("kv.concat_axis", True), "kv.concat_axis", ["expected a non-empty string"]),
    # --- expressions: parsed at load, then evaluated on the tiny config
    ("heads_attribute_missing", "llama", set_("kv.heads", "num_kv_heads"), "kv.heads", ["none of [num_kv_heads]", "LlamaConfig"]),
    ("heads_all_candidates_missing", "llama", set_("kv.heads", ["num_kv_heads", "n_head"]), "kv.heads", ["none of"]),
    ("heads_flag_missing", "llama", set_("kv.heads", "num_attention_heads if multi_query"), "kv.heads", ["none of"]),
    ("layers_attribute_missing_ref", "qwen", set_("kv.layers", "num_layers"), "kv.layers", ["QWenConfig"]),
    ("heads_unparsable", "llama", set_("kv.heads", "num_heads +"), "kv.heads", ["cannot read 'num_heads +'"]),
    ("head_dim_unparsable_list_item", "llama", set_("kv.head_dim", ["head_dim", "hidden_size // 4"]), "kv.head_dim",
     ["cannot read"]),
    ("heads_not_expression", "llama", set_("kv.heads", {"a": 1}), "kv.heads", ["expected a config attribute"]),
    ("heads_bool", "llama", set_("kv.heads", True), "kv.heads", ["expected a config attribute"]),
    ("head_dim_not_divisible", "llama", set_("kv.head_dim", "hidden_size / 3"), "kv.head_dim", ["not divisible"]),
    ("layers_zero", "llama", set_("kv.layers", 0), "kv.layers", ["evaluates to 0"]),
    ("matrix_nvt_two_values", "llama", set_("matrix.num_virtual_tokens", [3, 4]), "matrix.num_virtual_tokens",
     ["expected one value"]),
    ("matrix_nvt_unparsable", "llama", set_("matrix.num_virtual_tokens", "4 tokens"), "matrix.num_virtual_tokens",
     ["cannot read"]),
    # --- vocabularies (with did-you-mean)
    ("cache_container_hint", "llama", set_("cache.container", "tuple"), "cache.container",
     ["'tuple' is not one of", "did you mean 'tuples'"]),
    ("cache_argument_hint", "llama", set_("cache.argument", "past_key_value"), "cache.argument",
     ["did you mean 'past_key_values'"]),
    ("attention_mask_hint", "llama", set_("conventions.attention_mask", "extend2d"), "conventions.attention_mask",
     ["did you mean 'extend_2d'"]),
    ("position_ids_hint", "llama", set_("conventions.position_ids", "model_continue"), "conventions.position_ids",
     ["did you mean 'model_continues'"]),
    ("position_ids_far", "llama", set_("conventions.position_ids", "zzz"), "conventions.position_ids",
     ["is not one of model_continues"]),
    ("fix_name_hint", "qwen", set_("fixes.0.name", "causal_mask"), "fixes[0].name", ["did you mean 'causal_mask_with_past'"]),
    ("expected_adapter_hint", "llama", set_("expected_failures.0.adapter", "pfet"), "expected_failures[0].adapter",
     ["did you mean 'peft'"]),
    ("expected_adapter_list_hint", "llama", set_("expected_failures.0.adapter", ["naive", "harnes"]),
     "expected_failures[0].adapter[1]", ["did you mean 'harness'"]),
    ("expected_adapter_empty", "llama", set_("expected_failures.0.adapter", []), "expected_failures[0].adapter",
     ["expected a name or a list of names"]),
    ("expected_check_hint", "llama", set_("expected_failures.0.check", "generat"), "expected_failures[0].check",
     ["did you mean 'generate'"]),
    ("expected_variant_hint", "qwen", set_("expected_failures.0.variant", "unfixd"), "expected_failures[0].variant",
     ["did you mean 'unfixed'"]),
    ("expected_variant_undeclared", "llama", set_("expected_failures.0.variant", "unfixed"), "expected_failures[0].variant",
     ["is not one of default"]),
    ("expected_code_source_hint", "llama", set_("expected_failures.0.code_source", "remot"),
     "expected_failures[0].code_source", ["did you mean 'remote'"]),
    ("expected_transformers_bad_range", "llama", set_("expected_failures.0.transformers", ">=five"),
     "expected_failures[0].transformers", ["not a version range", "PEP 440"]),
    ("expected_transformers_bare_number", "llama", set_("expected_failures.0.transformers", 5),
     "expected_failures[0].transformers", ["not a version range"]),
    ("expected_raises_empty", "llama", set_("expected_failures.0.raises", ""), "expected_failures[0].raises",
     ["expected the text of the error", "remove raises"]),
    ("expected_raises_blank", "llama", set_("expected_failures.0.raises", "  "), "expected_failures[0].raises",
     ["expected the text of the error"]),
    ("expected_raises_number", "llama", set_("expected_failures.0.raises", 3), "expected_failures[0].raises",
     ["got 3"]),
    ("expected_raises_list", "llama", set_("expected_failures.0.raises", ["a", "b"]), "expected_failures[0].raises",
     ["expected the text of the error"]),
    ("expected_torch_bad_range", "llama", set_("expected_failures.0.torch", "2.x"), "expected_failures[0].torch",
     ["not a version range"]),
    ("build_code_source_hint", "llama", set_("build.code_source", "transformer"), "build.code_source",
     ["did you mean 'transformers'"]),
    # --- build
    ("reference_class_without_module", "qwen", set_("build.class", "QWenLMHeadModel"), "build.class",
     ["does not say which module", "module:Class"]),
    ("reference_config_class_without_module", "qwen", set_("build.config_class", "QWenConfig"), "build.config_class",
     ["does not say which module", "module:Class"]),
    ("reference_module_missing", "qwen", set_("build.class", "harness.reference.qwen1:QWenLMHeadModel"), "build.class",
     ["module 'harness.reference.qwen1' not found"]),
    ("reference_config_module_missing", "qwen", set_("build.config_class", "harness.reference.nosuch:QWenConfig"),
     "build.config_class", ["not found"]),
    ("config_rejects_value", "llama", set_("build.config.torch_dtype", "not_a_dtype"), "build.config",
     ["LlamaConfig rejected it"]),
    ("config_unknown_key", "llama", set_("build.config.num_key_value_head", 2), "build.config.num_key_value_head",
     ["no such setting", "did you mean 'num_key_value_heads'?"]),
    ("config_not_mapping", "llama", set_("build.config", [64, 2]), "build.config", ["expected a mapping"]),
    ("config_empty", "llama", set_("build.config", {}), "build.config", ["expected a mapping"]),
    ("seed_string", "llama", set_("build.seed", "0"), "build.seed", ["expected an integer"]),
    ("seed_float", "llama", set_("build.seed", 1.5), "build.seed", ["expected an integer"]),
    ("seed_bool", "llama", set_("build.seed", True), "build.seed", ["expected an integer"]),
    ("checkpoints_not_list", "llama", set_("build.checkpoints", {"a": 1}), "build.checkpoints", ["list of checkpoint ids"]),
    # --- remote
    ("remote_repo_no_owner", "qwen", set_("remote.repo", "Qwen-7B"), "remote.repo", ["not a hub repository id", "owner/name"]),
    ("remote_repo_too_deep", "qwen", set_("remote.repo", "Qwen/Qwen-7B/main"), "remote.repo", ["owner/name"]),
    ("remote_revision_branch", "qwen", set_("remote.revision", "main"), "remote.revision", ["not a pinned commit", "40-hex"]),
    ("remote_revision_short_sha", "qwen", set_("remote.revision", "ffe04dd"), "remote.revision", ["40-hex"]),
    ("remote_revision_41_hex", "qwen", set_("remote.revision", "f" * 41), "remote.revision", ["40-hex"]),
    ("remote_revision_not_hex", "qwen", set_("remote.revision", "g" * 40), "remote.revision", ["40-hex"]),
    ("remote_auto_class", "qwen", set_("remote.auto_class", "AutoModelForCausalLm"), "remote.auto_class",
     ["did you mean 'AutoModelForCausalLM'"]),
    ("remote_transformers_range", "qwen", set_("remote.transformers", "4.32 - 4.38"), "remote.transformers",
     ["not a version range"]),
    ("remote_config_not_mapping", "qwen", set_("remote.config", ["fp32"]), "remote.config", ["expected a mapping"]),
    ("remote_weights_hint", "qwen", set_("remote.weights", "referenc"), "remote.weights", ["did you mean 'reference'"]),
    ("remote_weights_reference_without_reference_build", "llama",
     set_("remote", {"repo": "meta-llama/Llama-2-7b-hf", "revision": "0" * 40, "weights": "reference"}),
     "remote.weights", ["needs a reference model"]),
    ("remote_not_mapping", "qwen", set_("remote", "Qwen/Qwen-7B"), "remote", ["expected a mapping"]),
    # --- variants
    ("variant_duplicate_name", "qwen", set_("variants.1.name", "unfixed"), "variants[1].name", ["'unfixed'", "repeated"]),
    ("variant_reserved_default", "qwen", set_("variants.0.name", "default"), "variants[0].name", ["'default'", "reserved"]),
    ("variant_name_dash", "qwen", set_("variants.0.name", "no-fix"), "variants[0].name", ["not a valid name"]),
    ("variant_apply_fixes_without_fixes", "llama", set_("variants", [{"name": "bare", "apply_fixes": False}]),
     "variants[0].apply_fixes", ["declares no fixes", "declare fixes"]),
    ("variant_apply_fixes_not_bool", "qwen", set_("variants.0.apply_fixes", "no"), "variants[0].apply_fixes",
     ["expected true or false"]),
    ("variant_adapter_hint", "qwen", set_("variants.0.adapters", ["harnes"]), "variants[0].adapters[0]",
     ["did you mean 'harness'"]),
    ("variant_adapter_scalar", "qwen", set_("variants.1.adapters", "naiv"), "variants[1].adapters", ["did you mean 'naive'"]),
    ("variant_nvt_unparsable", "qwen", set_("variants.1.num_virtual_tokens", "P tokens"), "variants[1].num_virtual_tokens", ["cannot read"]),
    # --- inputs
    ("insert_tokens_unset_on_config", "llama", set_("inputs", {"insert_tokens": ["pad_token_id"]}),
     "inputs.insert_tokens[0]", ["pad_token_id is not set in the config", "token id attribute"]),
    ("insert_tokens_missing_attr", "chatglm", set_("inputs.insert_tokens", ["gmask_token_id", "bos_tokn_id"]),
     "inputs.insert_tokens[1]", ["bos_tokn_id"]),
    ("insert_tokens_unparsable", "chatglm", set_("inputs.insert_tokens", ["[gMASK]"]), "inputs.insert_tokens", ["cannot read"]),
    ("insert_at_not_int", "chatglm", set_("inputs.insert_at", "start"), "inputs.insert_at", ["expected an integer index"]),
    ("inputs_unknown_key_hint", "chatglm", rename("inputs.insert_at", "insert_att"), "inputs.insert_att",
     ["did you mean 'insert_at'"]),
]


@pytest.mark.parametrize(
    "base, mutate, field, fragments",
    [pytest.param(b, m, f, frags, id=i) for i, b, m, f, frags in CASES],
)
def test_bad_spec_names_field_and_fix(tmp_path, base, mutate, field, fragments):
    expect_error(mutated(tmp_path, base, mutate), field, *fragments)


def test_case_ids_are_unique():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids))


# ----------------------------------------------------------------------------- bad files
@pytest.mark.parametrize(
    "text, fragments",
    [
        pytest.param("", ["the file is empty", "model_specs/llama.yaml"], id="empty"),
        pytest.param("# only a comment\n\n", ["the file is empty"], id="only_comments"),
    ],
)
def test_empty_file(tmp_path, text, fragments):
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    expect_error(path, "(file)", *fragments)


@pytest.mark.parametrize(
    "text, fragments",
    [
        pytest.param("family: [llama\nkv: {\n", ["not valid YAML", "line"], id="unclosed_flow"),
        pytest.param("family: llama\n  match: x\n bad: indent\n", ["not valid YAML"], id="bad_indent"),
        pytest.param("family: llama\nfamily: qwen\n", ["duplicate key 'family'", "line 2"], id="duplicate_top_key"),
        pytest.param("kv:\n  layout: [b, h, s, d]\n  layout: [b, s, h, d]\n", ["duplicate key 'layout'", "line 3"],
                     id="duplicate_nested_key"),
    ],
)
def test_invalid_yaml_and_duplicate_keys(tmp_path, text, fragments):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    expect_error(path, "(syntax)", *fragments)


def test_duplicate_key_in_a_real_spec(tmp_path):
    text = (SPEC_DIR / "llama.yaml").read_text().replace("  concat_axis: s\n", "  concat_axis: s\n  concat_axis: h\n")
    path = tmp_path / "llama.yaml"
    path.write_text(text)
    expect_error(path, "(syntax)", "duplicate key 'concat_axis'")


@pytest.mark.parametrize("suffix", [".json", ".txt", ".YAML", ""])
def test_wrong_suffix(tmp_path, suffix):
    path = tmp_path / f"llama{suffix}"
    shutil.copy(SPEC_DIR / "llama.yaml", path)
    expect_error(path, "(file)", "rename the file to <name>.yaml")


def test_yml_suffix_is_accepted(tmp_path):
    path = tmp_path / "llama.yml"
    shutil.copy(SPEC_DIR / "llama.yaml", path)
    assert load_spec(path).name == "llama"


@pytest.mark.parametrize("stem", ["my-llama", "Llama", "_llama", "llama 2"])
def test_bad_file_name(tmp_path, stem):
    path = tmp_path / f"{stem}.yaml"
    shutil.copy(SPEC_DIR / "llama.yaml", path)
    expect_error(path, "(file name)", f"{stem!r} is not a valid spec name", "no '-'")


def test_missing_file(tmp_path):
    expect_error(tmp_path / "nowhere.yaml", "(file)", "cannot read")


# ----------------------------------------------------------------------------- once bugs, now errors
# Each of these inputs once crashed the loader or loaded silently; each must be a SpecError naming the field.
BUGS = [
    ("heads_non_numeric_attr", "llama", set_("kv.heads", "hidden_act"), "kv.heads"),  # ValueError: int('silu')
    ("heads_dict_attr", "llama", set_("kv.heads", "id2label"), "kv.heads"),  # TypeError: int(dict)
    ("head_dim_divide_by_zero", "llama", set_("kv.head_dim", "hidden_size / 0"), "kv.head_dim"),  # ZeroDivisionError
    ("reference_class_missing_package", "qwen", set_("build.class", "nosuchpkg.qwen:QWenLMHeadModel"), "build.class"),
    ("vocab_limit_empty_list", "llama", set_("inputs", {"vocab_limit": []}), "inputs.vocab_limit"),  # IndexError
    ("variant_nvt_empty_list", "qwen", set_("variants.1.num_virtual_tokens", []), "variants[1].num_virtual_tokens"),
    ("config_class_unknown_names_config_class", "llama", set_("build.config_class", "LlamaConfg"), "build.config_class"),
    ("reference_class_missing_attr", "qwen", set_("build.class", "harness.reference.qwen:QWenLMHead"), "build.class"),
    ("transformers_class_unknown", "llama", set_("build.class", "LlamaForCausalLMM"), "build.class"),
    ("vocab_limit_attr_missing", "llama", set_("inputs", {"vocab_limit": "vocab_sz"}), "inputs.vocab_limit"),
    ("matrix_nvt_attr_missing", "llama", set_("matrix.num_virtual_tokens", "n_prefix"), "matrix.num_virtual_tokens"),
    ("matrix_nvt_zero", "llama", set_("matrix.num_virtual_tokens", 0), "matrix.num_virtual_tokens"),
    ("remote_repo_empty_parts", "qwen", set_("remote.repo", "Qwen/"), "remote.repo"),
]



@pytest.mark.parametrize("base, mutate, field", [pytest.param(b, m, f, id=i) for i, b, m, f in BUGS])
def test_former_crash_is_a_clear_error(tmp_path, base, mutate, field):
    expect_error(mutated(tmp_path, base, mutate), field)



@pytest.mark.parametrize(
    "content",
    [
        pytest.param("- family: llama\n- kv: {}\n", id="top_level_list_has_empty_field"),
        pytest.param("just a sentence\n", id="top_level_scalar_has_empty_field"),
        pytest.param("? [a, b]\n: 1\n", id="unhashable_key_typeerror"),
        pytest.param(b"family: \xff\xfe\n", id="not_utf8_unicodedecodeerror"),
    ],
)
def test_odd_files_get_a_named_field(tmp_path, content):
    path = tmp_path / "odd.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert info.value.field.strip() and info.value.fix.strip()
    assert f": {info.value.field}: " in str(info.value)



def test_raises_narrows_an_expected_failure_to_its_text(tmp_path):
    path = mutated(tmp_path, "qwen", set_("expected_failures.3.raises", "object is not subscriptable"))
    declared = load_spec(path).expected_failures
    assert declared[3].raises == "object is not subscriptable"
    assert declared[3].covers_message("TypeError: 'DynamicCache' object is not subscriptable")
    assert not declared[3].covers_message("ModuleNotFoundError: No module named 'einops'")
    assert not declared[3].covers_message("TypeError: 'DynamicCache' object is not Subscriptable")  # case counts
    assert not declared[3].covers_message(None)
    assert declared[0].raises is None  # without raises, any failure of the cell is the declared one
    assert declared[0].covers_message("anything at all") and declared[0].covers_message(None)


def test_yaml_merge_key_is_accepted(tmp_path):
    text = (SPEC_DIR / "qwen.yaml").read_text()
    old = "  config: {fp32: true, bf16: false, fp16: false, use_flash_attn: false}\n"
    assert old in text
    path = tmp_path / "qwen.yaml"
    path.write_text(text.replace(old, "  config:\n    <<: {fp32: true, bf16: false, fp16: false, use_flash_attn: false}\n"))
    assert load_spec(path).remote.config["fp32"] is True


# ----------------------------------------------------------------------------- the real specs
@pytest.fixture(scope="module")
def specs() -> list[ModelSpec]:
    return load_specs()


@pytest.mark.parametrize("path", spec_paths(), ids=lambda p: p.name)
def test_every_spec_loads_and_derives_concat_dim(path):
    spec = load_spec(path)
    assert spec.name == path.stem
    if spec.not_applicable:  # no KV cache, so no kv section (tests/test_not_applicable.py measures the claim)
        assert spec.kv is None and spec.not_applicable.strip()
        return
    assert spec.kv.concat_axis == "s"
    assert spec.kv.concat_dim == spec.kv.layout.dim("s")
    assert spec.kv.layout.axes[spec.kv.concat_dim] == "s"
    assert spec.cache.container in names.CONTAINERS
    assert spec.variants[0].name == "default"


def test_known_concat_dims(specs):
    dims = {s.name: s.kv.concat_dim for s in specs if s.kv}  # not_applicable specs have no kv
    assert dims["llama"] == 2 and dims["qwen"] == 1 and dims["chatglm"] == 0 and dims["chatglm2"] == 0


def test_spec_is_frozen(specs):
    spec = specs[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.kv.concat_axis = "h"
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.build.seed = 1


def test_mutation_base_is_valid(tmp_path):
    for base in BASES:  # the cases above fail for the mutation, not for the copy
        load_spec(write(tmp_path, copy.deepcopy(BASES[base]), base))


# ----------------------------------------------------------------------------- find_spec_for
def _spec(specs, name):
    return next(s for s in specs if s.name == name)


@pytest.mark.parametrize("spec_name", ["llama", "qwen", "qwen1.5", "chatglm", "chatglm2"])
def test_find_spec_for_own_config(specs, spec_name):
    config = build_config(_spec(specs, spec_name))
    assert find_spec_for(config, specs).name == spec_name


def test_find_spec_for_distinguishes_chatglm_generations(specs):
    v1 = build_config(_spec(specs, "chatglm"))
    v2 = build_config(_spec(specs, "chatglm2"))
    assert v1.model_type == v2.model_type == "chatglm"
    assert find_spec_for(v1, specs).name == "chatglm"  # position_encoding_2d
    assert find_spec_for(v2, specs).name == "chatglm2"  # multi_query_group_num (chatglm3 ties, later by name)


def test_find_spec_for_types(specs):
    from transformers import LlamaConfig

    from harness.reference.qwen import QWenConfig

    assert find_spec_for(LlamaConfig(), specs).name == "llama"
    assert find_spec_for(QWenConfig(), specs).name == "qwen"


def test_find_spec_for_unknown_model_type(specs):
    from transformers import (
        MambaConfig,  # no attention KV cache: never a spec of its own
    )

    with pytest.raises(LookupError, match="mamba"):
        find_spec_for(MambaConfig(), specs)


# ----------------------------------------------------------------------------- CLI
def test_cli_validate_repo_specs(capsys):
    assert cli_main(["validate"]) == 0
    out = capsys.readouterr()
    # the only remark: chatglm2 and chatglm3 share a match section (and a cache contract); transformers' own
    # warnings about tiny configs (printed once per process) are not ours
    ours = [ln for ln in out.err.splitlines() if ln.startswith(("note:", "error:"))]
    assert ours == ["note: chatglm3 matches the same configs as chatglm2; prefix_tune(model) "
                                    "picks chatglm2 unless given spec='chatglm3'"]
    assert out.out.count("ok: ") == len(spec_paths())


def test_cli_validate_explicit_folder(capsys):
    assert cli_main(["validate", str(SPEC_DIR)]) == 0
    assert "concat dim 1" in capsys.readouterr().out  # qwen


def test_cli_validate_one_good_one_bad(tmp_path, capsys):
    shutil.copy(SPEC_DIR / "llama.yaml", tmp_path / "llama.yaml")
    bad = mutated(tmp_path, "qwen", set_("kv.concat_axis", 1), name="qwen")
    assert cli_main(["validate", str(tmp_path)]) == 2
    out = capsys.readouterr()
    assert f"ok: {tmp_path / 'llama.yaml'}" in out.out
    assert str(bad) in out.err
    assert "kv.concat_axis" in out.err and "Fix:" in out.err
    assert "llama.yaml" not in out.err


def test_cli_validate_files_reports_every_bad_one(tmp_path, capsys):
    a = mutated(tmp_path, "llama", rename("kv.layout", "layuot"), name="a")
    b = mutated(tmp_path, "llama", set_("cache.container", "tuple"), name="b")
    assert cli_main(["validate", str(a), str(b)]) == 2
    err = capsys.readouterr().err
    assert f"{a}: kv.layuot:" in err and f"{b}: cache.container:" in err


def test_cli_validate_empty_folder(tmp_path, capsys):
    assert cli_main(["validate", str(tmp_path)]) == 2
    assert "no spec files found" in capsys.readouterr().err


# ----------------------------------------------------------------------------- config keys the model reads
def test_a_config_key_the_model_reads_is_accepted_and_a_typo_is_not(tmp_path):
    """Qwen3MoeConfig (transformers 5.24) declares no head_dim, yet its attention reads
    getattr(config, "head_dim", ...): the key changes the built model's cache, so validate accepts it.
    Control: a misspelt key, which nothing reads, is still refused naming file, field and a did-you-mean."""
    from harness.core.spec import check_buildable

    data = yaml.safe_load((SPEC_DIR / "qwen3_moe.yaml").read_text())
    data["build"]["config"]["head_dim"] = 8  # not hidden_size / heads (16)
    spec = load_spec(write(tmp_path, data, "qwen3_moe"))
    assert check_buildable(spec)["k_shape"][-1] == 8  # measured: the key is read
    data["build"]["config"]["head_dmi"] = 8
    expect_error(write(tmp_path, data, "qwen3_moe"), "build.config.head_dmi",
                 "does not read it", "did you mean 'head_dim'?")


def test_the_lookup_uses_the_specs_that_load_here(tmp_path, monkeypatch):
    """A shipped spec naming a config class this transformers lacks (Cohere's under 4.37) must not stop
    prefix_tune(model) for every other model; when nothing matches, the error names it."""
    from transformers import GPT2Config, LlamaConfig

    from harness.core import spec as spec_mod

    shutil.copy(spec_mod.SPEC_DIR / "llama.yaml", tmp_path / "llama.yaml")
    text = (spec_mod.SPEC_DIR / "cohere.yaml").read_text().replace("CohereConfig", "NoSuchConfig")
    (tmp_path / "cohere.yaml").write_text(text)
    monkeypatch.setattr(spec_mod, "SPEC_DIR", tmp_path)
    with pytest.raises(spec_mod.SpecError):
        spec_mod.load_specs()  # the strict loader still refuses
    assert spec_mod.find_spec_for(LlamaConfig()).name == "llama"
    with pytest.raises(LookupError, match=r"1 spec file\(s\) did not load here: cohere.yaml: build.config_class"):
        spec_mod.find_spec_for(GPT2Config())  # no gpt2.yaml in this folder
