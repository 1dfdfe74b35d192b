"""--shard K/N: a deterministic, even split by past durations, and shards of one run id that merge
into one run which reads complete only when every shard is in."""
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.cli import main as cli
from harness.core.spec import load_specs
from harness.matrix import shards
from harness.matrix.cells import build_cells, select_specs
from harness.reporting import results
from harness.reporting.report import run_summary

ROOT = Path(__file__).resolve().parent.parent
SELECTION = ["--models", "llama", "--adapters", "harness,naive", "--checks", "accepts,equivalence,save_load"]


# ----------------------------------------------------------------------------- parsing and splitting
def test_parse_takes_k_of_n_and_refuses_what_does_not_exist():
    assert shards.parse("2/3") == shards.Shard(2, 3) and str(shards.parse(" 3 / 3 ")) == "3/3"
    for bad in ("0/3", "4/3", "3", "a/b", "1/0", "-1/2"):
        with pytest.raises(ValueError, match="K/N"):
            shards.parse(bad)


def test_split_covers_every_cell_once_evenly_and_deterministically():
    ids = [f"cell-{i:02d}" for i in range(40)]
    durations = {i: float(n % 7 + 1) * (10 if n == 3 else 1) for n, i in enumerate(ids)}
    parts = shards.split(ids, durations, 3)
    assert sorted(sum(parts, [])) == sorted(ids)  # union is the whole run, no cell twice
    assert all(set(a).isdisjoint(b) for a in parts for b in parts if a is not b)
    loads = [sum(durations[i] for i in p) for p in parts]
    assert max(loads) - min(loads) <= max(durations.values())  # LPT: within one cell of even
    assert shards.split(list(reversed(ids)), durations, 3) == parts  # order given does not matter
    assert shards.digest(parts) == shards.digest(shards.split(ids, dict(durations), 3))


def test_split_weighs_by_duration_not_by_count():
    durations = {"slow": 100.0, "a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0}
    parts = shards.split(list(durations), durations, 2)
    assert ["slow"] in parts and ["a", "b", "c", "d"] in parts


def test_unknown_cells_weigh_the_median_and_groups_stay_together():
    durations = {"m1-a": 5.0, "m1-b": 5.0, "m2-a": 1.0}
    parts = shards.split(["m1-a", "m1-b", "m2-a", "m2-b", "m3-a"], durations, 2, group_of=lambda i: i[:2])
    spec_problems = shards.split(["spec-a.yaml", "spec-b.yaml", "spec-c.yaml", "m1-a"], {}, 2, group_of={"m1-a": "m1"}.get)
    assert list(map(len, spec_problems)) == [2, 2]  # ids without a group (None) are each their own
    assert {"m1-a", "m1-b"} <= set(parts[0]) or {"m1-a", "m1-b"} <= set(parts[1])
    assert sorted(sum(parts, [])) == ["m1-a", "m1-b", "m2-a", "m2-b", "m3-a"]
    assert shards.split(["x", "y"], {}, 2) == [["x"], ["y"]]  # nothing known: 1 s each


def test_past_durations_come_from_result_rows(tmp_path):
    run = tmp_path / "runs" / "old"
    w = results.PartWriter(run, "gw0")
    for cell, secs in (("llama-harness-accepts", 2.0), ("llama-harness-train", 30.0)):
        w.add({"model": "llama", "code_source": "transformers", "adapter": "harness", "check": cell.split("-")[-1],
               "status": "pass", "duration_s": secs, "nodeid": f"harness/test_matrix.py::test_cell[{cell}]"})
    assert shards.past_durations([run]) == {"llama-harness-accepts": 2.0, "llama-harness-train": 30.0}
    opt = SimpleNamespace(shard="1/2", shard_durations=[str(run)], shard_by="cell", run_id="r")
    plan = shards.plan(opt, ["llama-harness-accepts", "llama-harness-train", "x"], lambda i: None, tmp_path)
    assert plan.ids == ["llama-harness-train"] and plan.seconds == 30.0
    with pytest.raises(ValueError, match="not a run folder"):
        shards.plan(SimpleNamespace(shard="1/2", shard_durations=[str(tmp_path)], shard_by="cell", run_id="r"),
                    ["x"], None, tmp_path)
    with pytest.raises(ValueError, match="needs --run-id"):  # else every shard would start a run of its own
        shards.plan(SimpleNamespace(shard="1/2", shard_durations=[], shard_by="cell", run_id=None), ["x"], None, tmp_path)


def test_a_shard_that_split_the_run_differently_is_refused(tmp_path):
    a = shards.Plan(shards.Shard(1, 2), ["x", "y"], ["x"], digest="aaaa", sources=["results/baseline"])
    b = shards.Plan(shards.Shard(2, 2), ["x", "y"], ["x"], digest="bbbb", sources=[])
    assert shards.conflict(tmp_path, a) is None
    shards.start(tmp_path, a, results.now())
    problem = shards.conflict(tmp_path, b)
    assert "split the cells differently" in problem and "--shard-durations" in problem
    assert shards.conflict(tmp_path, shards.Plan(b.shard, b.all_ids, ["y"], digest="aaaa")) is None  # same split


def test_settings_accept_other_shards_of_the_run_but_not_another_count():
    meta = {"run_id": "r", "steps": 60, "shard_count": 3}
    assert results.settings_conflict(meta, {"steps": 60, "shard_count": 3}) is None
    assert "shard_count=3" in results.settings_conflict(meta, {"steps": 60, "shard_count": 4})


# ----------------------------------------------------------------------------- three machines, one run
def _shard(tmp: Path, shard: str | None, run_id="merged"):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", str(ROOT / "harness"),
           *SELECTION, "--results-dir", str(tmp / "results"), "--run-id", run_id, "--dtype", "float32", "--attn", "sdpa", "--no-mlp-variant",
           *(["--shard", shard] if shard else [])]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)


def _runs_state(tmp: Path, capsys, run_id="merged") -> str:
    assert cli(["runs", "--results-dir", str(tmp / "results")]) == 0
    return next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(run_id))


def test_three_shards_merge_into_the_whole_run_and_read_complete_only_when_all_are_in(tmp_path, capsys):
    unsharded = {c.id for c in build_cells(select_specs(load_specs(), "llama"), "harness,naive",
                                           "accepts,equivalence,save_load")}
    run = results.runs_root(tmp_path / "results") / "merged"
    for k in (1, 2):
        done = _shard(tmp_path, f"{k}/3")
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = run_summary(run)
    assert not summary["complete"] and summary["missing"]  # 2 of 3 shards: incomplete
    state = _runs_state(tmp_path, capsys)
    assert "partial" in state and "shards 2/3 in (waiting for 3)" in state

    done = _shard(tmp_path, "3/3")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    df = results.read_run(run)
    got = {shards.cell_id(n) for n in df["nodeid"]}
    assert got == unsharded and len(df) == len(unsharded)  # union of the shards == the unsharded run
    per_shard = df.groupby("shard")["nodeid"].count().to_dict()
    assert set(per_shard) == {"1/3", "2/3", "3/3"} and all(n >= 1 for n in per_shard.values())
    assert all("shard" in p.name for p in results.part_files(run))  # own part files per shard
    assert run_summary(run)["complete"]
    assert "complete; shards 3/3 in" in _runs_state(tmp_path, capsys)
    meta = results.read_run_meta(run)
    assert meta["shard_count"] == 3 and sorted(meta["expected_cell_ids"]) == sorted(unsharded)
    assert sum(meta["shards"]["expected_cells"].values()) == len(unsharded)
