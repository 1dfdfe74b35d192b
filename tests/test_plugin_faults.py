"""The matrix under faults: one bad spec, a hanging model, a missing package, a model that cannot be
built, wrong options, a reused run id. Each is reported for what it is; nothing stops the rest and
no row is lost."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.reporting import results

ROOT = Path(__file__).resolve().parent.parent
LLAMA = yaml.safe_load((ROOT / "model_specs" / "llama.yaml").read_text())


def _spec(folder: Path, name: str, model_class=None, config_class="fault_models:FaultConfig", expected=None):
    spec = yaml.safe_load(yaml.safe_dump(LLAMA))
    if model_class:
        spec["build"].update(code_source="reference", **{"class": f"fault_models:{model_class}",
                                                          "config_class": config_class})
    spec["expected_failures"] = expected or []
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(spec))


def _pytest(tmp: Path, *args, run_id="r"):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", str(ROOT / "harness"),
           "--results-dir", str(tmp / "results"), "--run-id", run_id,
           "--dtype", "float32", "--attn", "sdpa", "--no-mlp-variant", *args]  # one cell per check (later args win)
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)


DECLARED = [{"adapter": "*", "check": "*", "reason": "declared for the test"}]


@pytest.fixture(scope="module")
def faulty_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults")
    specs = tmp / "specs"
    specs.mkdir()
    _spec(specs, "good")
    _spec(specs, "hangs", "HangingLM")
    _spec(specs, "needs_pkg", "MissingPackageLM", expected=DECLARED)
    _spec(specs, "unbuildable", "RaisingLM", config_class="fault_models:UnbuildableConfig", expected=DECLARED)
    _spec(specs, "raises_other", "RejectsCacheLM",
          expected=[{**DECLARED[0], "raises": "not subscriptable"}])  # declared, but another error comes
    _spec(specs, "raises_declared", "RejectsCacheLM", expected=[{**DECLARED[0], "raises": "Sizes of tensors"}])
    _spec(specs, "rejects_cache", "RejectsCacheLM", expected=DECLARED)  # the adapter's run fails: declared
    _spec(specs, "bare_model_fails", "RaisingLM", expected=DECLARED)  # fails with no adapter at all
    (specs / "broken.yaml").write_text("family: x\nkv: [b, s\n")
    wrong = yaml.safe_load(yaml.safe_dump(LLAMA))
    wrong["kv"]["heads"] = "num_attention_heads"  # loads, but the cache holds num_key_value_heads (2, not 4)
    (specs / "wrong_heads.yaml").write_text(yaml.safe_dump(wrong))
    done = _pytest(tmp, "--specs", str(specs), "--adapters", "harness", "--checks", "accepts",
                   "--cell-timeout", "5", run_id="faults")
    df = results.read_run(results.runs_root(tmp / "results") / "faults")
    return done, df.set_index("model")


def test_a_bad_spec_file_removes_only_its_own_rows(faulty_run):
    done, df = faulty_run
    assert df.loc["good", "status"] == "pass"
    assert df.loc["broken", "status"] == "error" and df.loc["broken", "check"] == "spec"
    assert "broken.yaml" in df.loc["broken", "message"] and "Fix:" in df.loc["broken", "message"]
    assert "INTERNALERROR" not in done.stdout + done.stderr
    assert "broken.yaml" in done.stdout  # in the terminal summary too


def test_a_spec_that_loads_but_misreads_the_cache_is_an_error_naming_the_field(faulty_run):
    """What `validate` checks runs in every cell's set-up: no raw shape error from deep inside a check."""
    _, df = faulty_run
    message = df.loc["wrong_heads", "message"]
    assert df.loc["wrong_heads", "status"] == "error"
    assert "wrong_heads.yaml: kv.heads: the spec gives 4 (num_attention_heads), the model's cache measured 2" in message
    assert "Fix:" in message


def test_a_hanging_cell_becomes_a_timeout_row_and_the_matrix_goes_on(faulty_run):
    done, df = faulty_run
    assert df.loc["hangs", "status"] == "timeout"
    assert "--cell-timeout 5" in df.loc["hangs", "message"]
    assert {"good", "needs_pkg", "unbuildable", "raises_other", "raises_declared"} <= set(df.index)


def test_a_declared_failure_never_covers_a_missing_package_or_a_model_that_cannot_be_built(faulty_run):
    _, df = faulty_run
    assert df.loc["needs_pkg", "status"] == "error" and "einops" in df.loc["needs_pkg", "message"]
    assert df.loc["unbuildable", "status"] == "error" and "injected" in df.loc["unbuildable", "message"]


def test_raises_narrows_a_declared_failure_to_its_error_text(faulty_run):
    _, df = faulty_run
    assert df.loc["raises_other", "status"] == "error"
    assert df.loc["raises_declared", "status"] == "xfail"


def test_a_declared_failure_covers_the_adapters_run_never_the_bare_model(faulty_run):
    _, df = faulty_run
    assert df.loc["rejects_cache", "status"] == "xfail"
    assert df.loc["bare_model_fails", "status"] == "error"
    # caught before any adapter runs, by the spec check every cell's set-up makes (what `validate` checks)
    message = df.loc["bare_model_fails", "message"]
    assert "bare_model_fails.yaml: (forward): one forward with a cache" in message and "Fix:" in message


def test_the_end_of_the_run_lists_what_was_not_measured(faulty_run):
    done, _ = faulty_run
    out = done.stdout
    assert done.returncode == 1
    assert "prefix-compat: 1 time-outs" in out and "hangs: 1 cell(s)" in out
    assert "errors" in out and "einops" in out


@pytest.mark.parametrize("args,needle", [
    (["--models", "llamma"], "did you mean 'llama'"),
    (["--checks", "equivalance"], "did you mean 'equivalence'"),
    (["--adapters", "pft"], "did you mean 'peft'"),
    (["--specs", "/nonexistent/specs"], "no such folder"),
    (["--steps", "0"], "at least 1 step"),
    (["--cell-timeout", "0"], "positive number"),
    (["--device", "cuda"], "no CUDA device"),
    (["--dtype", "float8"], "invalid choice"),
])
def test_wrong_options_are_usage_errors(tmp_path, args, needle):
    done = _pytest(tmp_path, *args, "--run-id", "x")
    assert done.returncode == 4, done.stdout + done.stderr
    text = done.stdout + done.stderr
    assert needle in text and "Traceback" not in text and "INTERNALERROR" not in text


def test_bad_run_ids_are_usage_errors(tmp_path):
    done = _pytest(tmp_path, "--models", "llama", run_id="../outside")
    assert done.returncode == 4 and "run id" in done.stdout + done.stderr
    assert not (tmp_path / "outside").exists()


def test_a_reused_run_id_with_other_settings_is_refused(tmp_path):
    common = ["--models", "llama", "--adapters", "harness", "--checks", "accepts"]
    first = _pytest(tmp_path, *common, "--steps", "60", run_id="same")
    assert first.returncode == 0, first.stdout
    again = _pytest(tmp_path, *common, "--steps", "5", run_id="same")
    assert again.returncode == 4 and "steps=60" in again.stdout + again.stderr
    df = results.read_run(results.runs_root(tmp_path / "results") / "same")
    assert df["steps"].tolist() == [60]


def test_the_report_of_a_faulty_run_lists_the_spec_that_did_not_load(faulty_run, tmp_path):
    from harness.reporting.report import table

    text = table([_run_dir(faulty_run)])
    assert "Spec files that did not load" in text and "broken.yaml" in text
    assert "| hangs |" in text and "TIMEOUT" in text


def _run_dir(faulty_run) -> Path:
    done, _ = faulty_run
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("prefix-compat: run faults"))
    return Path(line.rsplit("rows in ", 1)[1].strip())
