"""``prefix-compat sweep``: a sample of the sweep (a transformer, a state-space model, a hybrid, a type
the probe cannot draft), faults that must cost only their own rows, the sweep table, the diff between
two sweeps, and the same sweep inside the matrix (``pytest harness/ --sweep-types``).

The full sweep is its own command (README "Checking a new release"); this sample takes about a minute
on an idle 2-core machine."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.core import names
from harness.probe.sweep import SweepSettings, execute, main, select_types
from harness.reporting import results
from harness.reporting.diff import diff_runs, render
from harness.reporting.report import run_summary
from harness.reporting.sweeps import adapter_verdict, sweep_table, type_verdicts

ROOT = Path(__file__).resolve().parent.parent
# llama: an attention model (probe ok, checks run); mamba: no attention KV cache; bamba: a hybrid
# (attention and state-space layers); dbrx: the probe cannot build its tiny model under transformers 5.24
# (DbrxAttentionConfig has no rope_theta). If a probe improvement drafts dbrx, pick another probe-failed type.
SAMPLE = ["llama", "mamba", "bamba", "dbrx"]


def _cli(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ))


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    done = _cli("sweep", "--types", ",".join(SAMPLE), "--results-dir", str(tmp / "results"), "--run-id", "sample",
                "-o", str(tmp / "SWEEP.md"), "-q")
    run = results.runs_root(tmp / "results") / "sample"
    return done, run, results.read_run(run), tmp


def test_sample_sweep_rows(sample):
    done, run, df, _ = sample
    assert done.returncode == 0, done.stderr[-3000:]
    probes = df[df["check"] == "probe"].set_index("model")
    assert sorted(probes.index) == sorted(SAMPLE)  # one probe row per type
    assert (probes.loc["llama", "status"], probes.loc["llama", "message"]) == ("pass", "ok")
    assert probes.loc["mamba", "status"] == "n/a" and "no attention K/V" in probes.loc["mamba", "message"]
    assert probes.loc["bamba", "status"] == "n/a" and "hybrid" in probes.loc["bamba", "message"]
    dbrx = probes.loc["dbrx"]
    assert dbrx["status"] == "error" and dbrx["message"].startswith("probe-failed: the tiny model does not build")
    assert json.loads(dbrx["details"])["probe"] == "probe-failed"
    checks = df[df["check"] != "probe"]
    assert set(checks["model"]) == {"llama"}  # only an ok draft runs checks
    harness_ = checks[checks["adapter"] == "harness"].set_index("check")["status"].to_dict()
    assert harness_ == {c: "pass" for c in names.CHECKS}  # our adapter on a probe-drafted LLaMA spec
    peft = checks[checks["adapter"] == "peft"]
    assert sorted(peft["check"]) == sorted(names.CHECKS) and set(peft["status"]) <= {"pass", "fail"}
    assert (checks["steps"] == SweepSettings.steps).all() and checks["threshold"].notna().all()
    s = run_summary(run)
    assert s["complete"] and s["rows"] == len(SAMPLE) + 2 * len(names.CHECKS)  # llama: both adapters, every check


def test_sample_sweep_table(sample):
    done, run, df, tmp = sample
    text = (tmp / "SWEEP.md").read_text()
    assert text == sweep_table(run)
    assert "**3 of 4 model types have a measured verdict** (pass, fail or n/a); probe-failed: 1 (25.0 %)" in text
    lines = {ln.split(" | ")[0].lstrip("| "): ln for ln in text.splitlines() if ln.startswith("| ")}
    assert lines["llama"].startswith("| llama | ok | pass | ✓ | ✓ | ✓ | ✓ | ✓ | ✓ |")
    assert lines["mamba"].startswith("| mamba | n/a | n/a | · |") and "no attention K/V" in lines["mamba"]
    assert lines["dbrx"].startswith("| dbrx | probe-failed | probe-failed |") and "does not build" in lines["dbrx"]
    assert _cli("report", str(run), "--sweep").stdout == text  # the same table from the stored run


def test_unknown_type_is_a_usage_error(capsys):
    assert main(["--types", "lama,mamba"]) == 4
    err = capsys.readouterr().err
    assert "'lama' (did you mean 'llama'?)" in err
    assert select_types("mamba,llama,mamba") == ["mamba", "llama"]


def test_a_crashing_or_hanging_type_costs_only_its_own_rows(monkeypatch):
    """A worker that dies (no exception to catch) or hangs where SIGALRM cannot reach is replaced; its
    type gets a row saying what happened, and the types after it still run."""
    monkeypatch.syspath_prepend(str(ROOT / "tests"))  # spawned workers import tests/fault_sweep.py
    rows = []
    settings = SweepSettings(checks=(), jobs=1, per_worker=4, probe_timeout=2, grace=3, probe="fault_sweep:probe")
    outcome = execute(["crashes", "mamba", "hangs", "rwkv"], settings, rows.append)
    by = {r["family"]: r for r in rows}
    assert sorted(by) == ["crashes", "hangs", "mamba", "rwkv"] and len(rows) == 4
    assert by["crashes"]["status"] == "error" and "worker process died (exit code 3)" in by["crashes"]["message"]
    assert by["hangs"]["status"] == "timeout" and "killed after" in by["hangs"]["message"]
    assert by["mamba"]["status"] == by["rwkv"]["status"] == "n/a"
    assert outcome.probes["mamba"]["status"] == "n/a"


# ----------------------------------------------------------------------------- verdicts and diffs
def _row(model, adapter, check, status, message="", probe=None):
    return {"model": model, "spec": model, "family": model, "code_source": "transformers", "adapter": adapter,
            "check": check, "status": status, "message": message, "nodeid": f"sweep[{model}-{adapter}-{check}]",
            "details": {"probe": probe} if probe else None, "finished_at": results.now(), "run_id": "x",
            "transformers_version": "0", "torch_version": "0", "peft_version": "0"}


def _run(tmp: Path, name: str, rows: list) -> Path:
    run = results.run_dir_for(tmp, name)
    w = results.PartWriter(run, "sweep")
    for r in rows:
        w.add(r)
    results.write_run_meta(run, {"run_id": name, "finished_at": results.now(), "expected_cells": len(rows)})
    return run


def _checks(model, failing=None, status="fail"):
    return [_row(model, "harness", c, status if c == failing else "pass", f"{c} measured") for c in names.CHECKS]


def test_adapter_verdict_rules():
    assert adapter_verdict(["pass", "fail", "error"]) == "fail"  # a measured failure decides
    assert adapter_verdict(["pass", "xpass"]) == "pass"
    assert adapter_verdict(["pass", "timeout", "inconclusive"]) == "error"
    assert adapter_verdict(["pass", "inconclusive"]) == "inconclusive"
    assert adapter_verdict([]) is None


def test_diff_of_two_sweeps_lists_model_types(tmp_path):
    a = _run(tmp_path, "a", [_row("llama", "-", "probe", "pass", "ok", "ok"), *_checks("llama"),
                             _row("mamba", "-", "probe", "n/a", "n/a: no attention K/V", "n/a"),
                             _row("odd", "-", "probe", "error", "probe-failed: blocked", "probe-failed")])
    b = _run(tmp_path, "b", [_row("llama", "-", "probe", "pass", "ok", "ok"), *_checks("llama", "equivalence"),
                             _row("newlm", "-", "probe", "n/a", "n/a: recurrent", "n/a"),
                             _row("odd", "-", "probe", "error", "probe-failed: blocked", "probe-failed")])
    assert type_verdicts(results.read_run(b))["llama"] == ("fail", "harness equivalence: equivalence measured")
    d = diff_runs(a, b)
    kinds = {c["type"]: (c["kind"], c["before"], c["after"]) for c in d.types}
    assert kinds == {"llama": ("changed", "pass", "fail"), "mamba": ("vanished", "n/a", None),
                     "newlm": ("appeared", None, "n/a")}  # odd: probe-failed in both, not listed
    text = render(d)
    assert "Model types that changed verdict: 1\n  llama: pass -> fail  [harness equivalence" in text
    assert "Model types that vanished: 1\n  mamba: n/a -> (none)" in text
    done = _cli("diff", str(a), str(b))
    assert done.returncode == 1 and "llama: pass -> fail" in done.stdout  # a cell regressed: exit 1


def test_diff_of_plain_runs_has_no_type_section(tmp_path):
    a = _run(tmp_path, "a", _checks("llama"))
    b = _run(tmp_path, "b", _checks("llama"))
    d = diff_runs(a, b)
    assert d.types is None and "Model types" not in render(d)


# ----------------------------------------------------------------------------- inside the matrix
def test_pytest_sweep_runs_drafted_specs_instead_of_the_spec_files(tmp_path):
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", str(ROOT / "harness"),
           "--sweep-types", "llama,mamba", "--adapters", "harness", "--checks", "accepts",
           "--results-dir", str(tmp_path / "results"), "--run-id", "psweep",
           "--dtype", "float32", "--attn", "sdpa", "--no-mlp-variant"]  # one cell per check
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env=dict(os.environ))
    assert done.returncode == 0, done.stdout[-3000:]
    df = results.read_run(results.runs_root(tmp_path / "results") / "psweep")
    got = sorted(zip(df["model"], df["adapter"], df["check"], df["status"]))
    # the probe rows, and the drafted llama's cell; no spec file of model_specs/ ran
    assert got == [("llama", "-", "probe", "pass"), ("llama", "harness", "accepts", "pass"), ("mamba", "-", "probe", "n/a")]
    bad = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", str(ROOT / "harness"),
           "--sweep-types", "lama", "--results-dir", str(tmp_path / "results")]
    refused = subprocess.run(bad, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 4 and "--sweep-types: " in refused.stderr and "did you mean 'llama'" in refused.stderr
