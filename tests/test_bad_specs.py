"""The corpus of malformed specs (tests/bad_specs/), and the loading that never lets one bad file
cost another spec its rows.

Each corpus file says in its first line which field its error must name (``# expect: kv.layout``);
``# buildable`` marks a file that loads but whose model is refused by check_buildable (the build,
the memory estimate or the measured cache), ``# duplicate`` one that loads alone but clashes by name
with another corpus file. A zero-byte file cannot carry the line: it must be refused as ``(file)``.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from harness.core.layout import CANONICAL
from harness.core.models import build_model, kv_dims
from harness.core.spec import (
    SPEC_DIR,
    SpecError,
    check_buildable,
    load_spec,
    load_specs,
    load_specs_report,
    spec_paths,
)

CORPUS = Path(__file__).resolve().parent / "bad_specs"
# The memory check_buildable is told the machine has: far above every tiny model (< 1 MiB), far below
# the 7B config in the corpus (25 GiB), so the test does not depend on this machine's memory.
MEMORY = 2 * 2 ** 30


def _header(path: Path) -> tuple[str, set[str]]:
    """(expected field, markers) from a corpus file's leading comment lines."""
    raw = path.read_bytes()
    if not raw:
        return "(file)", set()
    lines = raw.decode("ascii", errors="replace").splitlines()
    assert lines[0].startswith("# expect: "), f"{path.name}: first line must be '# expect: <field>'"
    markers = {line[2:].strip() for line in lines[1:] if line in ("# buildable", "# duplicate")}
    return lines[0].removeprefix("# expect: ").strip(), markers


FILES = sorted(CORPUS.iterdir())
CASES = {p.name: _header(p) for p in FILES}
SINGLE = [p for p in FILES if "duplicate" not in CASES[p.name][1]]
DUPLICATES = [p for p in FILES if "duplicate" in CASES[p.name][1]]


def _assert_names(e: SpecError, path: Path, field: str) -> None:
    assert e.field == field, f"{path.name}: expected field {field!r}, got {e.field!r}: {e}"
    assert e.path == str(path) and str(path) in str(e), f"the message does not name the file: {e}"
    assert e.problem.strip(), f"no problem stated: {e}"
    assert e.fix.strip(), f"no fix given: {e}"


# ----------------------------------------------------------------------------- the corpus itself
def test_corpus_has_forty_distinct_mistakes():
    assert len(FILES) >= 40
    # every body differs, except where the mistake is the file's name (suffix, stem, clash)
    bodies = {}
    for p in FILES:
        body = b"\n".join(x for x in p.read_bytes().split(b"\n") if not x.startswith(b"# "))
        bodies.setdefault(body, []).append(p.name)
    shared = [sorted(v) for v in bodies.values() if len(v) > 1]
    assert shared == [["Bad-Name.yaml", "dup_name.yaml", "dup_name.yml", "wrong_suffix.YAML"]]
    assert len(DUPLICATES) == 2
    # every check_buildable branch is exercised by at least one file
    built = {CASES[p.name][0] for p in FILES if "buildable" in CASES[p.name][1]}
    assert {"build.config", "kv.layout", "kv.heads", "kv.head_dim", "kv.layers", "cache.argument",
            "conventions.position_ids", "conventions.attention_mask", "(forward)"} <= built


@pytest.mark.parametrize("path", SINGLE, ids=lambda p: p.name)
def test_bad_spec_is_refused_naming_file_field_and_fix(path):
    field, markers = CASES[path.name]
    if "buildable" in markers:
        spec = load_spec(path)  # the mistake only shows once the model is built
        with pytest.raises(SpecError) as info:
            check_buildable(spec, memory_bytes=MEMORY)
    else:
        with pytest.raises(SpecError) as info:
            load_spec(path)
    _assert_names(info.value, path, field)


def test_name_clash_files_load_alone_and_are_refused_together():
    for path in DUPLICATES:
        assert load_spec(path).name == "dup_name"
    _, errors = load_specs_report([CORPUS])
    clash = {e.path: e for e in errors if e.field == "(file name)" and "also given by" in e.problem}
    assert set(clash) == {str(p) for p in DUPLICATES}
    a, b = DUPLICATES
    assert str(b) in clash[str(a)].problem and str(a) in clash[str(b)].problem
    assert all(clash[str(p)].fix for p in DUPLICATES)


def test_one_bad_file_never_costs_another_spec():
    good = load_specs()
    specs, errors = load_specs_report([CORPUS, SPEC_DIR], build=True, memory_bytes=MEMORY)
    assert [s.name for s in specs] == [s.name for s in good]  # every spec of model_specs/, nothing else
    # one error per corpus file, each naming the field the file declares
    assert sorted(e.path for e in errors) == sorted(str(p) for p in FILES)
    for e in errors:
        path = Path(e.path)
        _assert_names(e, path, CASES[path.name][0])


def test_without_build_the_buildable_files_load():
    specs, errors = load_specs_report([CORPUS])
    buildable = {p.stem for p in FILES if "buildable" in CASES[p.name][1]}
    assert {s.name for s in specs} == buildable
    assert len(errors) == len(FILES) - len(buildable)


# ----------------------------------------------------------------------------- load_specs_report
def test_missing_path_is_an_error_and_the_rest_loads(tmp_path):
    shutil.copy(SPEC_DIR / "llama.yaml", tmp_path / "llama.yaml")
    nowhere = tmp_path / "nowhere"
    specs, errors = load_specs_report([nowhere, tmp_path])
    assert [s.name for s in specs] == ["llama"]
    assert len(errors) == 1
    _assert_names(errors[0], nowhere, "(file)")
    assert "no such file or folder" in errors[0].problem


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "README.md").write_text("not a spec")
    specs, errors = load_specs_report([tmp_path])
    assert specs == [] and len(errors) == 1
    _assert_names(errors[0], tmp_path, "(folder)")


@pytest.mark.parametrize("names", [("x/llama.yaml", "y/llama.yaml"), ("x/llama.yaml", "x/llama.yml")])
def test_duplicate_spec_names_refuse_both(tmp_path, names):
    for name in names:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        shutil.copy(SPEC_DIR / "llama.yaml", tmp_path / name)
    shutil.copy(SPEC_DIR / "qwen.yaml", tmp_path / "x" / "qwen.yaml")
    folders = sorted({str((tmp_path / n).parent) for n in names})
    specs, errors = load_specs_report(folders)
    assert [s.name for s in specs] == ["qwen"]  # neither llama loads; the other spec does
    assert sorted(e.path for e in errors) == sorted(str(tmp_path / n) for n in names)
    first, second = (tmp_path / n for n in names)
    by_path = {e.path: e for e in errors}
    assert str(second) in by_path[str(first)].problem and str(first) in by_path[str(second)].problem
    with pytest.raises(SpecError) as info:
        load_specs(folders)
    assert info.value.field == "(file name)"


def test_the_same_file_given_twice_is_one_spec(tmp_path):
    shutil.copy(SPEC_DIR / "llama.yaml", tmp_path / "llama.yaml")
    specs, errors = load_specs_report([tmp_path, tmp_path / "llama.yaml"])
    assert errors == [] and [s.name for s in specs] == ["llama"]


def test_folder_scan_reports_upper_case_suffix_and_skips_other_files(tmp_path):
    shutil.copy(SPEC_DIR / "llama.yaml", tmp_path / "llama.yaml")
    shutil.copy(SPEC_DIR / "qwen.yaml", tmp_path / "qwen.YAML")
    (tmp_path / "notes.txt").write_text("family: x")
    (tmp_path / ".hidden.yaml").write_text("family: x")
    assert spec_paths([tmp_path]) == [tmp_path / "llama.yaml", tmp_path / "qwen.YAML"]
    specs, errors = load_specs_report([tmp_path])
    assert [s.name for s in specs] == ["llama"]
    assert [(e.path, e.field) for e in errors] == [(str(tmp_path / "qwen.YAML"), "(file)")]


def test_a_loader_crash_costs_only_its_file(tmp_path, monkeypatch):
    import harness.core.spec as spec_module

    for name in ("llama", "qwen"):
        shutil.copy(SPEC_DIR / f"{name}.yaml", tmp_path / f"{name}.yaml")
    real = spec_module.load_spec

    def crashing(path):
        if Path(path).stem == "llama":
            raise RuntimeError("simulated loader bug")
        return real(path)

    monkeypatch.setattr(spec_module, "load_spec", crashing)
    specs, errors = load_specs_report([tmp_path])
    assert [s.name for s in specs] == ["qwen"]
    assert len(errors) == 1 and errors[0].path == str(tmp_path / "llama.yaml")
    assert "simulated loader bug" in errors[0].problem and errors[0].fix


def test_load_specs_raises_the_first_error(tmp_path):
    shutil.copy(SPEC_DIR / "llama.yaml", tmp_path / "llama.yaml")
    shutil.copy(CORPUS / "kv_list.yaml", tmp_path / "broken.yaml")
    with pytest.raises(SpecError) as info:
        load_specs([tmp_path])
    assert info.value.path == str(tmp_path / "broken.yaml") and info.value.field == "kv"


# ----------------------------------------------------------------------------- check_buildable
@pytest.mark.parametrize("path", spec_paths(), ids=lambda p: p.name)
def test_every_repo_spec_is_buildable(path):
    """What `validate` runs on model_specs/: measured values agree with the built model."""
    spec = load_spec(path)
    got = check_buildable(spec)  # this machine's real available memory
    if spec.not_applicable:  # measured: no cached tensor grows with the tokens (tests/test_not_applicable.py)
        assert "none of which grows" in got["summary"] or "no cache" in got["summary"]
        return
    model = build_model(spec)
    params = sum(p.numel() for p in model.parameters())
    assert got["params"] == params > 0  # the meta-device estimate counts exactly what gets allocated
    assert got["bytes"] >= 4 * params
    dims = kv_dims(spec, model.config)
    batch, length = got["tokens"]
    # the probe sizes are told apart from the head sizes, so a swapped layout cannot pass unseen
    assert len({batch, length, dims.heads, dims.head_dim}) == 4 and {batch, length}.isdisjoint({dims.v_head_dim})
    assert got["layers"] == dims.layers
    want = spec.kv.layout.shape(b=batch, s=length, h=dims.heads, d=dims.head_dim)
    assert got["k_shape"] == want  # V: its own head dim where the spec gives kv.v_head_dim (MLA)
    assert got["v_shape"] == spec.kv.layout.shape(b=batch, s=length, h=dims.heads, d=dims.v_head_dim)
    assert 0 < got["seconds"] < 60


def test_memory_estimate_is_the_real_parameter_count():
    """The corpus's 7B config: LLaMA-2-7B has 6,738,415,616 parameters (untied 32000-token vocab)."""
    with pytest.raises(SpecError) as info:
        check_buildable(load_spec(CORPUS / "config_too_big.yaml"), memory_bytes=MEMORY)
    assert "6,738,415,616 parameters" in info.value.problem and "GiB" in info.value.problem
    assert "2 GiB available" in info.value.problem


def test_memory_limit_applies_to_tiny_models_too():
    spec = load_spec(SPEC_DIR / "llama.yaml")
    need = check_buildable(spec)["bytes"]
    with pytest.raises(SpecError) as info:
        check_buildable(spec, memory_bytes=need)  # one copy fits, the matrix's two do not
    assert info.value.field == "build.config"
    check_buildable(spec, memory_bytes=2 * need)


def test_layout_error_names_the_layout_that_fits():
    with pytest.raises(SpecError) as info:
        check_buildable(load_spec(CORPUS / "layout_disagrees.yaml"), memory_bytes=MEMORY)
    assert "[b, s, h, d]" in info.value.problem and info.value.fix == f"write layout: {CANONICAL}"


def test_heads_error_names_given_and_measured_values():
    with pytest.raises(SpecError) as info:
        check_buildable(load_spec(CORPUS / "heads_disagree.yaml"), memory_bytes=MEMORY)
    e = info.value
    assert "the spec gives 4 (num_attention_heads)" in e.problem and "measured 2" in e.problem
    assert "num_key_value_heads" in e.fix and "eos_token_id" not in e.fix


def test_pad_token_error_says_how_to_fix_it():
    with pytest.raises(SpecError) as info:
        check_buildable(load_spec(CORPUS / "pad_token_above_vocab.yaml"), memory_bytes=MEMORY)
    assert "Padding_idx must be within num_embeddings" in info.value.problem
    assert "pad_token_id below vocab_size" in info.value.fix


def test_check_buildable_leaves_no_gradient_state():
    check_buildable(load_spec(SPEC_DIR / "qwen.yaml"))
    assert torch.is_grad_enabled()
