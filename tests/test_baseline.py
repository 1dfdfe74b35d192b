"""`prefix-compat baseline RUN`: a whole run becomes results/baseline/ (what `diff --gate` holds CI to);
anything less is refused in one line, exit 2, with the old baseline left as it was."""
import hashlib
import os
from pathlib import Path

import pytest
from fake_runs import write_run

from harness.cli import main
from harness.reporting import results

CELLS = {("llama", "harness", "accepts"): "pass", ("llama", "harness", "equivalence"): "pass",
         ("llama", "naive", "accepts"): "xfail"}


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the command's defaults (results/, results/baseline) are relative
    old = write_run(tmp_path / "results", "old", {("gpt2", "harness", "accepts"): "pass"}, parts=1)
    baseline = tmp_path / "results" / "baseline"
    baseline.mkdir()
    for f in old.iterdir():
        (baseline / f.name).write_bytes(f.read_bytes())
    (baseline / "heatmap.png").write_bytes(b"stale picture")
    return tmp_path


def test_a_complete_run_replaces_the_baseline(store, capsys):
    run = write_run(store / "results", "new", CELLS)
    assert main(["baseline", "new"]) == 0
    baseline = store / "results" / "baseline"
    # exactly the run's parts and run.json: nothing of the old baseline is left
    assert digest(baseline) == digest(run)
    assert sorted(digest(baseline)) == ["part-host-100-gw0.parquet", "part-host-101-gw1.parquet", "run.json"]
    out = capsys.readouterr().out
    assert "is now run new (3 cells: pass 2, xfail 1" in out
    # the gate reads it as a run equal to the one it came from
    assert main(["diff", "results/baseline", "new", "--gate"]) == 0
    assert not list((store / "results").glob(".baseline*"))  # no staging folders left behind


def test_the_run_can_be_named_by_folder_and_the_baseline_put_elsewhere(store):
    run = write_run(store / "results", "new", CELLS)
    assert main(["baseline", str(run), "--to", str(store / "elsewhere")]) == 0
    assert digest(store / "elsewhere") == digest(run)


def refused(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("prefix-compat baseline: error: ")
    return err


@pytest.mark.parametrize("how, expected", [
    ("unfinished", "it never finished"),
    ("cells missing", "1 cell(s) missing: llama-peft-accepts"),
    ("no run.json", "it has no run.json"),
    ("damaged part", "is damaged: part-host-100-gw0.parquet unreadable"),
])
def test_an_incomplete_or_damaged_run_is_refused_and_the_old_baseline_kept(store, capsys, how, expected):
    before = digest(store / "results" / "baseline")
    run = write_run(store / "results", "bad", CELLS, finished=how != "unfinished",
                    extra_expected=("llama-peft-accepts",) if how == "cells missing" else ())
    if how == "no run.json":
        (run / "run.json").unlink()
    if how == "damaged part":
        (run / "part-host-100-gw0.parquet").write_bytes(b"not parquet")
    err = refused(capsys, ["baseline", "bad"])
    assert expected in err and "bad" in err
    assert digest(store / "results" / "baseline") == before


def test_an_unknown_run_and_a_folder_that_is_not_a_baseline_are_refused(store, capsys):
    assert "no run nope" in refused(capsys, ["baseline", "nope"])
    write_run(store / "results", "new", CELLS)
    precious = store / "notes"
    precious.mkdir()
    (precious / "todo.txt").write_text("keep me")
    assert "is not a run folder" in refused(capsys, ["baseline", "new", "--to", str(precious)])
    assert (precious / "todo.txt").read_text() == "keep me"
    assert "already the baseline" in refused(capsys, ["baseline", "results/baseline"])


def test_it_never_asks(store):
    """Nothing interactive: with stdin closed the command still runs to its end."""
    import subprocess
    import sys

    write_run(store / "results", "new", CELLS)
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", "harness.cli", "baseline", "new"], cwd=store, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr
    assert results.read_run_meta(store / "results" / "baseline")["run_id"] == "new"
