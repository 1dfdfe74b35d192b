"""Damaged results never break the CLI: `runs` lists every readable run and marks damaged ones;
`report`, `diff` and `plots` on a missing, empty, non-run, truncated or column-less input exit 2 with
one line on stderr. And the new statuses show in every output. Runs are built by hand."""
from pathlib import Path

import pandas as pd
import pytest

from harness.cli import main
from harness.reporting import results
from harness.reporting.diff import diff_runs
from harness.reporting.report import CELL_TEXT, LEGEND, table

CHECKS = ["accepts", "equivalence", "generate", "gradients", "train"]


def row(**over):
    base = dict(run_id="r", started_at="2026-01-01T00:00:00+00:00", finished_at="2026-01-01T00:00:10+00:00",
                model="llama", spec="llama", variant="default", family="llama", code_source="transformers",
                adapter="harness", check="accepts", status="pass", metric=0.0, threshold=1e-4, message="ok",
                kv_layout="[b, h, s, d]", concat_dim=2, nodeid="harness/test_matrix.py::test_cell[x]",
                steps=60, seed=0)
    base.update(over)
    return base


def make_run(root: Path, name: str, statuses: dict[str, str] | None = None, finished: bool = True) -> Path:
    run = results.runs_root(root) / name
    statuses = statuses or {c: "pass" for c in CHECKS}
    w = results.PartWriter(run, "gw0")
    ids = []
    for check, status in statuses.items():
        cell_id = f"llama-harness-{check}"
        ids.append(cell_id)
        message = {"inconclusive": "the prefix did not change the tokens on any input tried",
                   "timeout": "ran past the 600 s cell time limit", "n/a": "the model has no attention KV cache"
                   }.get(status, "ok")
        w.add(row(run_id=name, check=check, status=status, message=message,
                  nodeid=f"harness/test_matrix.py::test_cell[{cell_id}]"))
    results.write_run_meta(run, {"run_id": name, "started_at": f"2026-01-0{len(name) % 9 + 1}T00:00:00+00:00",
                                 "finished_at": "2026-01-02T00:00:00+00:00" if finished else None,
                                 "expected_cells": len(ids), "expected_cell_ids": ids})
    return run


@pytest.fixture
def tree(tmp_path):
    """results/runs with a good run, a run of new statuses and every kind of damage."""
    root = tmp_path / "results"
    good = make_run(root, "good")
    new = make_run(root, "newstat", {"accepts": "pass", "equivalence": "inconclusive", "generate": "timeout",
                                     "gradients": "n/a", "train": "pass"})
    truncated = make_run(root, "truncated")
    part = next(truncated.glob("part-*.parquet"))
    part.write_bytes(part.read_bytes()[:200])
    columnless = make_run(root, "columnless")
    pd.DataFrame({"foo": [1]}).to_parquet(columnless / "part-other-1-gw1.parquet")
    nostatus = make_run(root, "nostatus")
    frame = pd.read_parquet(next(nostatus.glob("part-*.parquet"))).drop(columns=["status"])
    for p in nostatus.glob("part-*.parquet"):
        p.unlink()
    frame.to_parquet(nostatus / "part-other-1-gw0.parquet")
    corrupt = make_run(root, "corruptmeta")
    (corrupt / "run.json").write_text('{"run_id": "corrupt')
    empty_run = results.runs_root(root) / "nocells"
    results.write_run_meta(empty_run, {"run_id": "nocells", "started_at": "2026-01-01T00:00:00+00:00"})
    empty = tmp_path / "empty"
    empty.mkdir()
    notrun = tmp_path / "notrun"
    notrun.mkdir()
    (notrun / "notes.txt").write_text("hello")
    afile = tmp_path / "a-file.parquet"
    afile.write_text("x")
    return dict(root=root, good=good, new=new, truncated=truncated, columnless=columnless, nostatus=nostatus,
                corrupt=corrupt, nocells=empty_run, empty=empty, notrun=notrun, afile=afile,
                missing=tmp_path / "missing")


def one_error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"prefix-compat {command}: error: ") and "Traceback" not in err
    return lines[0]


# ----------------------------------------------------------------------------- runs
def test_runs_lists_every_run_and_marks_the_damaged_ones(tree, capsys):
    assert main(["runs", "--results-dir", str(tree["root"])]) == 0
    out = capsys.readouterr().out.splitlines()
    header = out[0].split()
    listing = {ln.split()[0]: ln for ln in out[1:]}
    assert sorted(listing) == ["columnless", "corruptmeta", "good", "newstat", "nocells", "nostatus", "truncated"]
    assert listing["good"].endswith("complete")
    truncated_part = next(tree["truncated"].glob("part-*.parquet")).name
    assert f"damaged: {truncated_part} unreadable (" in listing["truncated"]
    assert listing["columnless"].endswith("damaged: part-other-1-gw1.parquet lacks column(s) model, code_source, "
                                          "adapter, check, status")
    assert listing["nostatus"].endswith("damaged: part-other-1-gw0.parquet lacks column(s) status")
    assert "damaged: run.json unreadable (" in listing["corruptmeta"]
    assert listing["nocells"].endswith("partial (0/?)")
    # the counts of each status, the new ones included, sit under their headers
    counts = listing["newstat"].split()
    col = {name: header.index(name) for name in results.STATUSES}
    assert {s: counts[col[s]] for s in ("pass", "inconclusive", "timeout", "n/a", "fail")} == {
        "pass": "2", "inconclusive": "1", "timeout": "1", "n/a": "1", "fail": "0"}
    assert listing["columnless"].split()[col["pass"]] == "5"  # the readable part still counts


def test_runs_without_any_run_says_so(tmp_path, capsys):
    assert main(["runs", "--results-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("no runs under")


# ----------------------------------------------------------------------------- bad inputs exit 2
BAD = {
    "missing": "no run {p}: neither a folder nor a run id under",
    "empty": "{p} is not a run: it holds no run.json or part-*.parquet",
    "notrun": "{p} is not a run: it holds no run.json or part-*.parquet",
    "afile": "{p} is a file, not a run folder",
    "truncated": "run {p} is damaged: part-",
    "columnless": "run {p} is damaged: part-other-1-gw1.parquet lacks column(s) model",
    "nostatus": "run {p} is damaged: part-other-1-gw0.parquet lacks column(s) status",
    "corruptmeta": "run {p} is damaged: run.json unreadable (",
    "nocells": "run {p} has no cells: nothing was measured",
}


def _path(tree, kind):
    return tree["corrupt"] if kind == "corruptmeta" else tree[kind]


@pytest.mark.parametrize("kind", sorted(BAD))
def test_report_on_bad_input_exits_2_with_one_line(tree, capsys, kind):
    p = _path(tree, kind)
    assert main(["report", str(p), "--results-dir", str(tree["root"])]) == 2
    line = one_error_line(capsys, "report")
    assert BAD[kind].format(p=p) in line
    assert capsys.readouterr().out == ""  # no table, not even an empty one


@pytest.mark.parametrize("kind", sorted(BAD))
@pytest.mark.parametrize("side", ["A", "B"])
def test_diff_with_bad_input_on_either_side_exits_2_with_one_line(tree, capsys, kind, side):
    p = _path(tree, kind)
    pair = [str(p), str(tree["good"])] if side == "A" else [str(tree["good"]), str(p)]
    assert main(["diff", *pair, "--results-dir", str(tree["root"])]) == 2
    line = one_error_line(capsys, "diff")
    expected = BAD[kind].format(p=p)
    assert (expected.replace("run ", f"run {side} ", 1) if expected.startswith("run ") else expected) in line


@pytest.mark.parametrize("kind", sorted(BAD))
def test_plots_on_bad_input_exits_2_with_one_line(tree, capsys, kind):
    p = _path(tree, kind)
    assert main(["plots", str(p), "--results-dir", str(tree["root"])]) == 2
    assert BAD[kind].format(p=p) in one_error_line(capsys, "plots")
    assert not list(Path(p).glob("*.png")) if Path(p).is_dir() else True


def test_a_run_id_is_found_under_the_results_dir_and_a_path_like_id_is_refused(tree, capsys):
    assert main(["report", "good", "--results-dir", str(tree["root"])]) == 0
    assert "| llama |" in capsys.readouterr().out
    assert main(["report", "../good", "--results-dir", str(tree["root"] / "runs" / "good")]) == 2
    assert "no run ../good" in one_error_line(capsys, "report")


def test_report_on_the_results_folder_points_to_results_dir(tree, capsys):
    assert main(["report", str(tree["root"])]) == 2
    assert f"pass --results-dir {tree['root']}" in one_error_line(capsys, "report")


def test_report_without_runs_exits_2(tmp_path, capsys):
    assert main(["report", "--results-dir", str(tmp_path)]) == 2
    assert "no runs under" in one_error_line(capsys, "report")


def test_report_to_an_unwritable_place_exits_2(tree, capsys, tmp_path):
    assert main(["report", str(tree["good"]), "-o", str(tmp_path / "no" / "such" / "dir" / "t.md")]) == 2
    assert "No such file or directory" in one_error_line(capsys, "report")


# ----------------------------------------------------------------------------- the new statuses
def test_report_shows_the_new_statuses_with_their_reasons(tree):
    md = table(tree["new"])
    line = next(ln for ln in md.splitlines() if ln.startswith("| llama |"))
    # columns in names.CHECKS order: accepts, equivalence, gradients, train, generate
    assert line.endswith("| pass | inconclusive [1] | n/a [2] | pass | TIMEOUT [3] |")
    assert "1. the prefix did not change the tokens on any input tried" in md
    assert "2. the model has no attention KV cache" in md and "3. ran past the 600 s cell time limit" in md
    assert all(f"`{CELL_TEXT[s]}`" in LEGEND for s in results.STATUSES)
    html = table(tree["new"], "html")  # the page itself: tests/test_report_html.py
    from harness.reporting.plots import STATUS_COLORS

    for status in ("inconclusive", "timeout", "n/a"):
        assert f"data-status='{status}' style='background:{STATUS_COLORS[status]}'>" in html
    assert len({STATUS_COLORS[s] for s in results.STATUSES}) == len(results.STATUSES)  # one colour each


def test_a_pass_that_became_inconclusive_timeout_or_na_is_a_regression(tree, capsys):
    d = diff_runs(tree["good"], tree["new"])
    assert sorted((c.check, c.before, c.after) for c in d.regressions) == [
        ("equivalence", "pass", "inconclusive"), ("generate", "pass", "timeout"), ("gradients", "pass", "n/a")]
    assert len(d.undeclared_regressions) == 3
    assert main(["diff", str(tree["good"]), str(tree["new"])]) == 1
    assert "3 undeclared regression(s): FAIL" in capsys.readouterr().out
    back = diff_runs(tree["new"], tree["good"])
    assert sorted((c.check, c.before, c.after) for c in back.fixes) == [
        ("equivalence", "inconclusive", "pass"), ("generate", "timeout", "pass"), ("gradients", "n/a", "pass")]
    assert back.regressions == []


def test_a_damaged_run_is_never_complete(tree):
    from harness.reporting.report import run_summary

    s = run_summary(tree["columnless"])
    assert not s["complete"] and s["rows"] == 5
    assert s["problems"] == ["part-other-1-gw1.parquet lacks column(s) model, code_source, adapter, check, status"]


def test_plots_colour_every_status(tree, capsys):
    pytest.importorskip("matplotlib")
    from harness.reporting.plots import STATUS_COLORS

    assert set(STATUS_COLORS) == set(results.STATUSES)
    assert main(["plots", str(tree["new"])]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {tree['new'] / 'heatmap.png'}"
    assert (tree["new"] / "heatmap.png").stat().st_size > 1000
