"""``not_applicable``: a spec may say prefix tuning does not apply (no attention KV cache). The claim is
measured (the tiny model's cache must not grow with the tokens), a wrong claim is an error naming the
field, and the matrix turns such a spec into one ``n/a`` row with the reason."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.core.spec import (
    SPEC_DIR,
    SpecError,
    check_buildable,
    find_spec_for,
    load_spec,
    load_specs,
)
from harness.matrix.cells import NOT_APPLICABLE_CHECK, build_cells, not_applicable_cells
from harness.reporting import results

ROOT = Path(__file__).resolve().parent.parent
NA_SPECS = ["mamba", "rwkv"]


@pytest.mark.parametrize("name", NA_SPECS)
def test_repo_na_spec_loads_and_its_claim_is_measured(name):
    spec = load_spec(SPEC_DIR / f"{name}.yaml")
    assert spec.not_applicable.startswith("no attention KV cache")
    assert spec.kv is None and spec.cache is None and spec.conventions is None
    got = check_buildable(spec)
    # the model does return a cache (a recurrent state), and none of its tensors grows with the tokens
    assert got["cache"] is not None and got["state_tensors"] >= 2
    assert "none of which grows with the tokens" in got["summary"]


def _na_copy(tmp_path: Path, source: str, keep=("family", "description", "match", "build"), reason="no KV cache"):
    data = yaml.safe_load((SPEC_DIR / f"{source}.yaml").read_text())
    out = {k: data[k] for k in keep if k in data}
    out["not_applicable"] = reason
    path = tmp_path / f"{source}_na.yaml"
    path.write_text(yaml.safe_dump(out))
    return path


def test_a_wrong_claim_is_caught(tmp_path):
    """Control: a spec saying n/a for LLaMA (which has a KV cache) fails, naming the field and the
    tensors that grew."""
    spec = load_spec(_na_copy(tmp_path, "llama"))  # loads: the claim is only refuted by building the model
    with pytest.raises(SpecError) as info:
        check_buildable(spec)
    e = info.value
    assert e.field == "not_applicable"
    assert "grows with the tokens" in e.problem and "cache.layers[0].keys" in e.problem
    assert "(2, 2, 5, 16) -> (2, 2, 7, 16)" in e.problem  # [b, kv heads, s, d]: s went 5 -> 7
    assert "prefix-compat probe" in e.fix


def test_na_spec_has_no_feeding_sections(tmp_path):
    path = _na_copy(tmp_path, "llama", keep=("family", "match", "build", "kv"))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert info.value.field == "kv" and "remove kv" in info.value.fix


def test_na_spec_needs_a_reason(tmp_path):
    with pytest.raises(SpecError) as info:
        load_spec(_na_copy(tmp_path, "mamba", reason=""))
    assert info.value.field == "not_applicable"


def test_prefix_tune_on_a_na_model_says_why():
    from transformers import MambaConfig

    with pytest.raises(LookupError, match="prefix tuning does not apply to model_type 'mamba'.*no attention KV cache"):
        find_spec_for(MambaConfig(), load_specs())


def test_matrix_cells_of_na_specs():
    specs = load_specs()
    assert not [c for c in build_cells(specs) if c.spec.not_applicable]  # no adapter x check cells
    na = not_applicable_cells(specs)
    assert sorted(c.id for c in na) == [f"{n}-{NOT_APPLICABLE_CHECK}" for n in sorted(NA_SPECS)]


def test_matrix_gives_one_na_row_per_spec_and_an_error_for_a_wrong_claim(tmp_path):
    specs = tmp_path / "specs"
    specs.mkdir()
    for name in NA_SPECS:
        (specs / f"{name}.yaml").write_text((SPEC_DIR / f"{name}.yaml").read_text())
    _na_copy(specs, "llama")  # llama_na.yaml: claims n/a, has a KV cache
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", str(ROOT / "harness"),
           "--specs", str(specs), "--results-dir", str(tmp_path / "results"), "--run-id", "na"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=dict(os.environ))
    df = results.read_run(results.runs_root(tmp_path / "results") / "na").set_index("model")
    assert sorted(df.index) == ["llama_na", "mamba", "rwkv"], done.stdout[-2000:]  # one row per spec, whatever the checks
    for name in NA_SPECS:
        row = df.loc[name]
        assert (row["status"], row["adapter"], row["check"]) == ("n/a", "-", NOT_APPLICABLE_CHECK)
        assert row["message"].startswith("no attention KV cache") and "(measured: the forward returns" in row["message"]
    wrong = df.loc["llama_na"]
    assert wrong["status"] == "error" and "not_applicable" in wrong["message"] and "grows" in wrong["message"]
    assert done.returncode == 1  # the wrong claim fails the run
    from harness.reporting.report import table

    text = table(results.runs_root(tmp_path / "results") / "na")
    assert "\n- mamba: n/a: no attention KV cache" in text and "\n- rwkv: n/a: no attention KV cache" in text
    assert "| mamba |" not in text  # listed under the table, not as a row of empty cells


@pytest.mark.parametrize("model_type", ["mamba", "rwkv"])
def test_the_probe_drafts_a_not_applicable_spec_that_validates(model_type, tmp_path):
    """`prefix-compat probe mamba > model_specs/mamba.yaml` (README) must leave a spec, not an empty file:
    the draft loads, claims n/a with the probe's measured reason, and validate's own measurement agrees."""
    from harness.core.spec import check_buildable, load_spec
    from harness.probe import probe_model_type

    r = probe_model_type(model_type)
    assert r.status == "n/a" and r.yaml and r.reason in r.draft["not_applicable"]
    path = tmp_path / f"{model_type}.yaml"
    path.write_text(r.yaml)
    spec = load_spec(path)
    assert spec.not_applicable and spec.kv is None
    assert "none of which grows" in check_buildable(spec)["summary"]


def test_a_hybrid_gets_no_not_applicable_draft():
    """validate would measure the attention layers' growing K/V and refuse an n/a claim: no draft is
    printed for a hybrid (its n/a stays the probe's verdict, with the figures)."""
    from harness.probe import probe_model_type

    r = probe_model_type("bamba")
    assert r.status == "n/a" and "hybrid" in r.reason and r.yaml is None
