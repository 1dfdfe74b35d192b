"""The results store never loses or mixes a row: unique atomic parts readable by others, a full disk
that keeps every earlier row, plain run ids, refused setting changes, and readers that survive
damaged files. Rows are built by hand: no model runs here."""
import errno
import os
import socket
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness.reporting import results

ROOT = Path(__file__).resolve().parent.parent


def row(**over):
    base = dict(run_id="r1", started_at="2026-01-01T00:00:00+00:00", finished_at="2026-01-01T00:00:10+00:00",
                model="llama", spec="llama", variant="default", family="llama", code_source="transformers",
                adapter="harness", check="accepts", status="pass", metric=1.0, threshold=1.0, message="ok",
                steps=60, seed=0)
    base.update(over)
    return base


def only_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ----------------------------------------------------------------------------- statuses and schema
@pytest.mark.parametrize("status", ["inconclusive", "timeout", "n/a"])
def test_new_statuses_are_stored_and_read_back(tmp_path, status):
    results.PartWriter(tmp_path, "main").add(row(status=status, message="why"))
    df = results.read_run(tmp_path)
    assert df["status"].tolist() == [status]


def test_steps_and_seed_are_int64_columns(tmp_path):
    w = results.PartWriter(tmp_path, "main")
    w.add(row(steps=5, seed=7, num_virtual_tokens=4))
    table = pq.read_table(w.path)
    assert table.schema.field("steps").type == pa.int64() and table.schema.field("seed").type == pa.int64()
    assert table.column("steps").to_pylist() == [5] and table.column("seed").to_pylist() == [7]
    assert table.column("num_virtual_tokens").to_pylist() == [4]


def test_a_part_written_before_the_new_columns_reads_them_as_null(tmp_path):
    old = pd.DataFrame([{k: v for k, v in results.normalise_row(row()).items() if k not in ("steps", "seed")}])
    old.to_parquet(tmp_path / "part-oldhost-main.parquet")
    results.PartWriter(tmp_path, "main").add(row(check="train", steps=60, seed=3))
    df, problems = results.read_run_checked(tmp_path)
    assert problems == []
    assert list(df.columns) == results.COLUMNS
    by_check = df.set_index("check")
    assert pd.isna(by_check.loc["accepts", "steps"]) and pd.isna(by_check.loc["accepts", "seed"])
    assert by_check.loc["train", "steps"] == 60 and by_check.loc["train", "seed"] == 3


# ----------------------------------------------------------------------------- part files
def test_part_name_names_host_pid_and_worker(tmp_path):
    w = results.PartWriter(tmp_path, "gw3")
    w.add(row())
    host = "".join(c if c.isalnum() or c in "-_." else "_" for c in socket.gethostname())
    assert w.path.name == f"part-{host}-{os.getpid()}-gw3.parquet"


def test_a_writer_never_replaces_a_part_it_did_not_write(tmp_path):
    """A later session on this host whose pid was re-used finds 'its' name taken: it takes another."""
    w = results.PartWriter(tmp_path, "main")
    w.path.write_bytes(b"someone else's rows")
    w.add(row())
    w.add(row(check="train"))
    assert (tmp_path / results.PartWriter(tmp_path, "main").path.name).read_bytes() == b"someone else's rows"
    assert w.path.name.endswith("-main-2.parquet")
    assert pq.read_table(w.path).column("check").to_pylist() == ["accepts", "train"]


def test_without_hard_links_a_taken_name_is_still_never_replaced(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(results.os, "link", no_links)  # e.g. some network or FAT file systems
    taken = results.PartWriter(tmp_path, "main").path
    taken.write_bytes(b"theirs")
    w = results.PartWriter(tmp_path, "main")
    w.add(row())
    w.add(row(check="train"))
    assert taken.read_bytes() == b"theirs" and w.path.name.endswith("-main-2.parquet")
    assert pq.read_table(w.path).column("check").to_pylist() == ["accepts", "train"]
    assert only_files(tmp_path) == sorted([taken.name, w.path.name])


WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from harness.reporting import results
    run_dir, who, start = Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    while not start.exists():  # both processes start writing at once
        time.sleep(0.01)
    w = results.PartWriter(run_dir, "main")  # one worker name, one run id, one host
    for i in range(25):
        w.add(dict(run_id="same", finished_at=results.now(), model=f"m{i}", code_source="transformers",
                   adapter=who, check="accepts", status="pass"))
    print(w.path.name)
""")


def test_two_concurrent_sessions_with_one_run_id_keep_every_row(tmp_path):
    run_dir = tmp_path / "runs" / "same"
    start = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(ROOT), str(run_dir), who, str(start)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for who in ("one", "two")]
    start.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    names = [out.strip() for out, _ in outs]
    assert len(set(names)) == 2 and sorted(names) == only_files(run_dir)
    df, problems = results.read_run_checked(run_dir)
    assert problems == []
    assert len(df) == 50
    assert sorted(df.groupby("adapter").size().to_dict().items()) == [("one", 25), ("two", 25)]


def test_readers_keep_each_cells_latest_row_across_parts(tmp_path):
    # The newer row is in the part whose name sorts first, and its part is the older file.
    results.PartWriter(tmp_path, "a").add(row(status="pass", finished_at="2026-01-01T00:00:05+00:00"))
    results.PartWriter(tmp_path, "b").add(row(status="fail", finished_at="2026-01-01T00:00:01+00:00"))
    results.PartWriter(tmp_path, "c").add(row(check="train", status="error", finished_at=None))
    results.PartWriter(tmp_path, "d").add(row(check="train", status="pass", finished_at="2026-01-01T00:00:00+00:00"))
    df = results.read_run(tmp_path).set_index("check")
    assert df.loc["accepts", "status"] == "pass"
    assert df.loc["train", "status"] == "pass"  # a row without a time is the oldest
    assert len(df) == 2


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_files_are_readable_by_others_as_the_umask_allows(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        w = results.PartWriter(tmp_path, "main")
        w.add(row())
        w.add(row(check="train"))  # rewritten: still the same mode
        results.write_run_meta(tmp_path, {"run_id": "r1"})
    finally:
        os.umask(old)
    assert stat.S_IMODE(w.path.stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "run.json").stat().st_mode) == mode
    assert only_files(tmp_path) == sorted([w.path.name, "run.json"])  # no temp file left


def test_a_row_parquet_cannot_hold_is_refused_and_blocks_nothing(tmp_path):
    w = results.PartWriter(tmp_path, "main")
    with pytest.raises(ValueError, match="cannot be stored"):
        w.add(row(model=["not", "a", "string"]))
    with pytest.raises(ValueError, match="invalid literal for int"):
        w.add(row(steps="sixty"))
    w.add(row())
    assert pq.read_table(w.path).column("model").to_pylist() == ["llama"]


# ----------------------------------------------------------------------------- a full disk
def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_raises_a_clear_error_and_keeps_every_earlier_row(tmp_path, monkeypatch):
    w = results.PartWriter(tmp_path, "main")
    w.add(row(check="accepts"))
    w.add(row(check="equivalence"))
    before = w.path.read_bytes()
    monkeypatch.setattr(results.pq, "write_table", _disk_full)
    with pytest.raises(results.ResultsWriteError) as caught:
        w.add(row(check="train"))
    assert str(caught.value) == (f"cannot write results to {w.path}: No space left on device; every row written "
                                 f"before is intact in {tmp_path}")
    assert caught.value.errno == errno.ENOSPC
    assert w.path.read_bytes() == before
    assert pq.read_table(w.path).column("check").to_pylist() == ["accepts", "equivalence"]
    assert only_files(tmp_path) == [w.path.name]
    monkeypatch.undo()  # space again: the row that could not be written is not lost either
    w.add(row(check="generate"))
    assert pq.read_table(w.path).column("check").to_pylist() == ["accepts", "equivalence", "train", "generate"]


def test_a_write_that_fails_half_way_leaves_the_part_whole(tmp_path, monkeypatch):
    w = results.PartWriter(tmp_path, "main")
    w.add(row())
    real = results.pq.write_table

    def half_then_full(table, where, **kw):
        real(table, where, **kw)
        with open(where, "r+b") as f:
            f.truncate(os.path.getsize(where) // 2)
        _disk_full()

    monkeypatch.setattr(results.pq, "write_table", half_then_full)
    with pytest.raises(results.ResultsWriteError, match="No space left on device"):
        w.add(row(check="train"))
    monkeypatch.undo()
    df, problems = results.read_run_checked(tmp_path)
    assert problems == [] and df["check"].tolist() == ["accepts"]
    assert only_files(tmp_path) == [w.path.name]


def test_a_full_disk_on_run_json_is_a_clear_error_and_keeps_the_old_file(tmp_path, monkeypatch):
    results.write_run_meta(tmp_path, {"run_id": "r1", "steps": 60})
    monkeypatch.setattr(results.json, "dump", _disk_full)
    with pytest.raises(results.ResultsWriteError, match=r"cannot write .*run\.json: No space left on device"):
        results.write_run_meta(tmp_path, {"run_id": "r1", "steps": 5})
    monkeypatch.undo()
    assert results.read_run_meta(tmp_path) == {"run_id": "r1", "steps": 60}
    assert only_files(tmp_path) == ["run.json"]


# ----------------------------------------------------------------------------- run ids and settings
@pytest.mark.parametrize("name", ["nightly", "2026-01-31_a.b", "x" * 100, "a..b", "-dash"])
def test_plain_run_ids_are_accepted(tmp_path, name):
    assert results.check_run_id(name) == name
    assert results.run_dir_for(tmp_path, name) == tmp_path / "runs" / name


def test_generated_run_ids_are_plain():
    assert results.check_run_id(results.new_run_id())


@pytest.mark.parametrize("name, why", [
    ("", "is empty"), ("../x", r"contains '/'"), ("a/b", r"contains '/'"), ("..", "starts with '.'"),
    (".hidden", "starts with '.'"), ("x" * 101, "is 101 characters long"), ("a b", r"contains ' '"),
    ("r\u00e9sum\u00e9", "contains '\u00e9'"), ("a\\b", r"contains '\\\\'"), (None, "is empty"),
])
def test_other_run_ids_are_refused_with_the_rule(tmp_path, name, why):
    with pytest.raises(ValueError, match=why) as caught:
        results.check_run_id(name)
    assert "letters, digits, '-', '_' and '.', not starting with '.', at most 100 characters" in str(caught.value)
    with pytest.raises(ValueError):
        results.run_dir_for(tmp_path, name)


META = {"run_id": "nightly", "steps": 60, "dtype": "float32", "device": "cpu", "seed": 0,
        "num_virtual_tokens_override": None, "code_source": ["transformers", "reference"]}


def test_same_settings_do_not_conflict():
    same = {k: v for k, v in META.items() if k != "run_id"}
    same["code_source"] = ("transformers", "reference")  # a tuple here, a list in run.json
    assert results.settings_conflict(META, same) is None


def test_a_different_setting_is_named():
    assert results.settings_conflict(META, {"steps": 5, "dtype": "float32"}) == (
        "run id nightly was started with steps=60, this run has steps=5: use another --run-id (or none for a "
        "fresh one)")


def test_every_different_setting_is_named():
    message = results.settings_conflict(META, {"steps": 5, "dtype": "bfloat16", "device": "cpu", "seed": 1,
                                              "num_virtual_tokens_override": 8, "code_source": ["transformers"]})
    assert message.startswith("run id nightly was started with steps=60, dtype=float32, seed=0, "
                              "num_virtual_tokens_override=None, code_source=transformers,reference, "
                              "this run has steps=5, dtype=bfloat16, seed=1, num_virtual_tokens_override=8, "
                              "code_source=transformers: use another --run-id")


def test_settings_missing_on_either_side_are_ignored():
    older_run = {"run_id": "old", "steps": 60}  # a run.json from before seed was recorded
    assert results.settings_conflict(older_run, {"seed": 3, "dtype": "float16"}) is None
    assert results.settings_conflict(META, {}) is None
    assert "run id ? was started with steps=1" in results.settings_conflict({"steps": 1}, {"steps": 2})


# ----------------------------------------------------------------------------- damaged input
def _good_run(run_dir: Path, n: int = 2) -> results.PartWriter:
    w = results.PartWriter(run_dir, "gw0")
    for check in ["accepts", "equivalence", "gradients"][:n]:
        w.add(row(check=check))
    results.write_run_meta(run_dir, {"run_id": run_dir.name, "started_at": "2026-01-01T00:00:00+00:00"})
    return w


def test_a_truncated_part_is_reported_and_the_other_parts_read(tmp_path):
    _good_run(tmp_path)
    bad = results.PartWriter(tmp_path, "gw1")
    bad.add(row(check="train"))
    bad.path.write_bytes(bad.path.read_bytes()[: bad.path.stat().st_size // 2])
    df, problems = results.read_run_checked(tmp_path)
    assert sorted(df["check"]) == ["accepts", "equivalence"]
    assert len(problems) == 1 and problems[0].startswith(f"{bad.path.name} unreadable (")
    assert "Parquet" in problems[0] and str(tmp_path) not in problems[0]  # the cause, not the path again
    assert sorted(results.read_run(tmp_path)["check"]) == ["accepts", "equivalence"]


@pytest.mark.parametrize("frame, missing", [
    (pd.DataFrame({"foo": [1, 2]}), "model, code_source, adapter, check, status"),
    (pd.DataFrame([results.normalise_row(row(check="train"))]).drop(columns=["status"]), "status"),
])
def test_a_part_without_required_columns_is_reported(tmp_path, frame, missing):
    _good_run(tmp_path)
    frame.to_parquet(tmp_path / "part-x-1-gw9.parquet")
    df, problems = results.read_run_checked(tmp_path)
    assert problems == [f"part-x-1-gw9.parquet lacks column(s) {missing}"]
    assert sorted(df["check"]) == ["accepts", "equivalence"]


def test_a_part_with_an_unknown_status_is_reported(tmp_path):
    _good_run(tmp_path)
    frame = pd.DataFrame([results.normalise_row(row(check="train"))])
    frame["status"] = "passed"
    frame.to_parquet(tmp_path / "part-x-1-gw9.parquet")
    df, problems = results.read_run_checked(tmp_path)
    assert problems == ["part-x-1-gw9.parquet has 1 row(s) with unknown status passed"]
    assert len(df) == 2


@pytest.mark.parametrize("text, why", [("{not json", "run.json unreadable (Expecting property name"),
                                       ("[1, 2]", "run.json unreadable (holds a list, not an object)"),
                                       ("", "run.json unreadable (Expecting value")])
def test_a_corrupt_run_json_is_reported_and_the_rows_still_read(tmp_path, text, why):
    _good_run(tmp_path)
    (tmp_path / "run.json").write_text(text)
    assert results.read_run_meta(tmp_path) == {}
    meta, problem = results.read_run_meta_checked(tmp_path)
    assert meta == {} and problem.startswith(why)
    df, problems = results.read_run_checked(tmp_path)
    assert len(df) == 2 and len(problems) == 1 and problems[0].startswith(why)


def test_list_runs_lists_every_run_damaged_or_not(tmp_path):
    root = results.runs_root(tmp_path)
    for name in ("good", "corrupt-meta", "truncated", "meta-only"):
        _good_run(root / name)
    (root / "corrupt-meta" / "run.json").write_text("{")
    for part in (root / "truncated").glob("part-*.parquet"):
        part.write_bytes(b"PAR1 not really")
    for part in (root / "meta-only").glob("part-*.parquet"):
        part.unlink()
    (root / "not-a-run").mkdir()
    (root / "stray.txt").write_text("x")
    assert sorted(p.name for p in results.list_runs(tmp_path)) == ["corrupt-meta", "good", "meta-only", "truncated"]
    assert results.list_runs(tmp_path / "nowhere") == []
    assert results.list_runs(tmp_path / "runs" / "stray.txt") == []
