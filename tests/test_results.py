import os

import pandas as pd
import pyarrow.parquet as pq
import pytest

from harness.reporting import results


def row(**over):
    base = dict(run_id="r1", started_at="2026-01-01T00:00:00+00:00", finished_at=results.now(), model="llama",
                spec="llama", variant="default", family="llama", code_source="transformers", adapter="harness",
                check="accepts", status="pass", metric=1.0, threshold=1.0, message="ok", details={"curve": [(0, 1.0)]})
    base.update(over)
    return base


def test_every_row_is_on_disk_after_each_add(tmp_path):
    w = results.PartWriter(tmp_path, "gw0")
    for i, check in enumerate(["accepts", "equivalence", "train"]):
        w.add(row(check=check))
        on_disk = pq.read_table(w.path).to_pandas()
        assert len(on_disk) == i + 1
    assert list(on_disk.columns) == results.COLUMNS
    assert on_disk["details"].iloc[0].startswith("{")


def test_no_temp_files_are_left_and_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    w = results.PartWriter(tmp_path, "main")
    w.add(row())
    before = w.path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(results.pq, "write_table", boom)
    with pytest.raises(results.ResultsWriteError, match="disk full"):
        w.add(row(check="train"))
    assert w.path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [w.path.name]
    assert w.path.name.startswith("part-") and w.path.name.endswith(f"-{os.getpid()}-main.parquet")


def test_bad_status_is_refused(tmp_path):
    with pytest.raises(ValueError, match="status"):
        results.PartWriter(tmp_path, "x").add(row(status="ok"))


def test_parts_of_one_run_merge_and_nan_metrics_become_null(tmp_path):
    results.PartWriter(tmp_path, "gw0").add(row(check="accepts", metric=float("nan")))
    results.PartWriter(tmp_path, "gw1").add(row(check="train"))
    df = results.read_run(tmp_path)
    assert sorted(df["check"]) == ["accepts", "train"]
    assert pd.isna(df.set_index("check").loc["accepts", "metric"])


def test_run_meta_round_trips_and_runs_are_listed_oldest_first(tmp_path):
    for name, started in (("b", "2026-01-02"), ("a", "2026-01-03")):
        d = results.runs_root(tmp_path) / name
        results.write_run_meta(d, {"run_id": name, "started_at": started})
        results.PartWriter(d, "main").add(row(run_id=name))
    assert [p.name for p in results.list_runs(tmp_path)] == ["b", "a"]
    assert results.latest_run(tmp_path).name == "a"
    assert results.read_run_meta(results.latest_run(tmp_path))["started_at"] == "2026-01-03"
    assert not any(n.endswith(".tmp") for n in os.listdir(results.latest_run(tmp_path)))


def test_a_reused_run_id_keeps_earlier_rows_and_readers_keep_the_latest_per_cell(tmp_path):
    results.PartWriter(tmp_path, "gw0").add(row(check="accepts", status="fail", finished_at="2026-01-01T00:00:01"))
    first = next(tmp_path.glob("part-*.parquet"))
    before = first.read_bytes()
    again = results.PartWriter(tmp_path, "gw0")  # a second session with the same run id
    again.add(row(check="train", finished_at="2026-01-01T00:00:02"))
    again.add(row(check="accepts", status="pass", finished_at="2026-01-01T00:00:03"))
    # The second session never reads or rewrites the first one's part: it writes its own.
    assert again.path != first and first.read_bytes() == before
    assert len(pq.read_table(again.path)) == 2
    df = results.read_run(tmp_path).set_index("check")
    assert df.loc["accepts", "status"] == "pass" and len(df) == 2
