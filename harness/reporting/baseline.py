"""Making a run the baseline that CI diffs against (``results/baseline/``).

The baseline is what ``prefix-compat diff --gate`` holds every later run to, so only a whole run
may become one: a damaged, empty or unfinished run is refused, and the old baseline stays until the
new one is complete on disk (copied beside it, then swapped in).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from . import results
from .report import checked_rows, run_summary

MISSING_SHOWN = 3


def make_baseline(run_dir: Path, dest: Path) -> dict:
    """Replace ``dest``'s contents with ``run_dir``'s part files and run.json; the run's summary
    (``run_summary``). ValueError, in one line, when the run is not whole or ``dest`` is not a
    run folder to replace."""
    run_dir, dest = Path(run_dir), Path(dest)
    if dest.exists() and dest.resolve() == run_dir.resolve():
        raise ValueError(f"{run_dir} is already the baseline {dest}")
    if dest.exists() and (not dest.is_dir() or (any(dest.iterdir()) and not results.is_run_dir(dest))):
        # never delete something that is not a baseline, e.g. a mistyped --to results
        raise ValueError(f"{dest} exists and is not a run folder (no run.json or part-*.parquet); "
                         f"refusing to replace it: pass an empty or baseline folder")
    df = checked_rows(run_dir)  # damaged or empty: ValueError naming the file
    summary = run_summary(run_dir, df, [])
    if not summary["complete"]:
        raise ValueError(f"run {run_dir} is incomplete ({_why_incomplete(run_dir, summary)}); a baseline must be "
                         f"a whole run: finish it (re-run with the same --run-id) or pick a complete one "
                         f"(`prefix-compat runs`)")
    staged = dest.parent / f".{dest.name}.new-{os.getpid()}"
    old = dest.parent / f".{dest.name}.old-{os.getpid()}"
    try:
        staged.mkdir(parents=True)
        for part in results.part_files(run_dir):
            shutil.copy2(part, staged / part.name)
        shutil.copy2(run_dir / "run.json", staged / "run.json")
        if dest.exists():
            os.replace(dest, old)
        try:
            os.replace(staged, dest)
        except OSError:
            if old.exists():
                os.replace(old, dest)  # the old baseline back where it was
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return summary


def _why_incomplete(run_dir: Path, summary: dict) -> str:
    if not (Path(run_dir) / "run.json").is_file():
        return "it has no run.json, so nothing says which cells it should hold"
    if results.read_run_meta(run_dir).get("finished_at") is None:
        return "it never finished: run.json has no finished_at"
    missing = summary["missing"]
    if missing:
        more = f" and {len(missing) - MISSING_SHOWN} more" if len(missing) > MISSING_SHOWN else ""
        return f"{len(missing)} cell(s) missing: {', '.join(missing[:MISSING_SHOWN])}{more}"
    return f"{summary['rows']} of {summary['expected'] or '?'} cells"
