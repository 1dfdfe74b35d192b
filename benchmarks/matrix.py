"""What the compatibility matrix costs around its checks.

    python -m benchmarks.matrix            # -n 0 on 1, 2, 4 and all specs, -n auto on all specs
    python -m benchmarks.matrix --quick    # one spec, two checks: checks the output, in ~30 s

Each run is ``python -m pytest harness/ --models ... --results-dir <tmp> --run-id ...`` in a fresh
interpreter, timed from outside (wall). Reported:

- ``speedup``: wall of ``-n 0`` over wall of ``-n auto``, all specs;
- ``overhead``: wall of ``-n 0`` (all specs) over (interpreter start-up + the checks' own compute),
  minus 1. Start-up is a fresh interpreter importing torch, transformers and peft (what any run of a
  check needs). The checks' compute is the sum of the rows' ``duration_s``, which the plugin times
  inside the worker from the end of a test's set-up to the end of its teardown: it leaves out
  collection, model building (set-up), xdist and Parquet writing, but it includes pytest making
  the call's report (the traceback text of an expected failure). ``--direct`` also times the same
  checks called in-process without pytest, to show how much that report-making is;
- ``cell_cost_growth``: wall per measured cell with all specs over wall per measured cell with the first
  spec (-n 0). A measured cell is one that ran (any status but ``skip``): a skipped cell builds and runs
  nothing, and the share of them differs between spec sets (the first spec, BLOOM, skips its 54 sdpa cells,
  half of its 108), so counting them would make the ratio say more about skips than about cost.

Last line: ``matrix speedup=X overhead=Y cell_cost_growth=Z``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import ROOT, append_parquet, environment, fmt_ratio

STARTUP_CODE = "import torch, transformers, peft"


def spec_names() -> list[str]:
    from harness.core.spec import load_specs

    return [s.name for s in load_specs()]


def startup_seconds(repeats: int = 2) -> float:
    """A fresh interpreter importing what every check needs: the floor of any run (median)."""
    walls = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", STARTUP_CODE], cwd=ROOT, check=True)
        walls.append(time.perf_counter() - t0)
    return statistics.median(walls)


def run_matrix(models: list[str], workers: str, checks: str | None, adapters: str | None, steps: int | None,
               results_dir: Path, extra: list[str]) -> dict:
    """One ``pytest harness/`` in a subprocess; its wall time and the rows it wrote."""
    from harness.reporting.results import read_run

    run_id = f"bench-{workers}-{len(models)}-{os.urandom(3).hex()}"
    cmd = [sys.executable, "-m", "pytest", "harness/", "-q", "-p", "no:cacheprovider", "-n", workers,
           "--models", ",".join(models), "--results-dir", str(results_dir), "--run-id", run_id, *extra]
    if checks:
        cmd += ["--checks", checks]
    if adapters:
        cmd += ["--adapters", adapters]
    if steps:
        cmd += ["--steps", str(steps)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 1):  # 1: some cell failed, which a benchmark only reports
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{tail}")
    rows = read_run(results_dir / "runs" / run_id)
    counts = rows["status"].value_counts().to_dict() if len(rows) else {}
    return {"models": models, "workers": workers, "wall_s": wall, "cells": len(rows),
            "measured": int((rows["status"] != "skip").sum()) if len(rows) else 0,
            "compute_s": float(rows["duration_s"].sum()) if len(rows) else 0.0, "statuses": counts,
            "exit_code": proc.returncode, "summary": (proc.stdout.strip().splitlines() or [""])[-1]}


def direct_compute(models: list[str], checks: str | None, adapters: str | None, steps: int | None) -> dict:
    """The same cells' checks called in this process, no pytest: model building and the checks
    timed apart. A check that raises (an expected failure) counts up to the raise."""
    import torch

    from harness.core.models import build_model
    from harness.core.spec import load_specs
    from harness.matrix import checks as check_mod
    from harness.matrix.bench import Bench, Settings
    from harness.matrix.cells import build_cells, remote_skip_reason, select_specs

    cells = build_cells(select_specs(load_specs(), ",".join(models)), adapters, checks)
    settings = Settings("cpu", torch.float32, steps or Settings.steps)
    built, build_s, compute_s = {}, 0.0, 0.0
    for cell in cells:
        if remote_skip_reason(cell):
            continue
        key = (cell.spec.path, cell.code_source)
        if key not in built:
            t0 = time.perf_counter()
            built[key] = build_model(cell.spec, cell.code_source)
            build_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        try:
            check_mod.run(cell.check, Bench(cell, built[key], settings))
        except Exception:  # noqa: BLE001 - the matrix records it; here only its time counts
            pass
        compute_s += time.perf_counter() - t0
    return {"cells": len(cells), "build_s": build_s, "compute_s": compute_s}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.matrix", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one spec, two checks: checks the output, not the figures")
    ap.add_argument("--counts", default=None, help="spec counts for the per-cell cost, e.g. 1,2,4,all")
    ap.add_argument("--checks", default=None, help="passed to pytest --checks (default: all)")
    ap.add_argument("--adapters", default=None, help="passed to pytest --adapters (default: all)")
    ap.add_argument("--steps", type=int, default=None, help="passed to pytest --steps (train check)")
    ap.add_argument("--workers", default="auto", help="the parallel run's -n (default auto)")
    ap.add_argument("--direct", action="store_true", help="also time the checks in-process, without pytest")
    ap.add_argument("--no-save", action="store_true", help="do not append to results/bench/")
    ap.add_argument("--keep", action="store_true", help="keep the temporary results folder (its path is printed)")
    args = ap.parse_args(argv)
    if args.quick:  # one spec, two checks: the output's form, in well under a minute
        args.counts = args.counts or "1"
        args.checks = args.checks or "accepts,equivalence"
    args.counts = args.counts or "1,2,4,all"
    return args


def _counts(text: str, total: int) -> list[int]:
    out = []
    for item in text.split(","):
        item = item.strip()
        n = total if item == "all" else int(item)
        if not 1 <= n <= total:
            raise SystemExit(f"--counts {text}: {item} is not between 1 and the {total} specs")
        if n not in out:
            out.append(n)
    return sorted(out)


def main(argv=None) -> int:
    args = parse_args(argv)
    names = spec_names()
    counts = _counts(args.counts, len(names))
    largest = names[:counts[-1]]
    tmp = Path(tempfile.mkdtemp(prefix="prefix-compat-bench-"))
    try:
        startup = startup_seconds(1 if args.quick else 3)
        serial = {n: run_matrix(names[:n], "0", args.checks, args.adapters, args.steps, tmp, []) for n in counts}
        parallel = run_matrix(largest, args.workers, args.checks, args.adapters, args.steps, tmp, [])
        direct = direct_compute(largest, args.checks, args.adapters, args.steps) if args.direct else None
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    full = serial[counts[-1]]
    speedup = full["wall_s"] / parallel["wall_s"]
    overhead = full["wall_s"] / (startup + full["compute_s"]) - 1
    per_cell = {n: r["wall_s"] / max(1, r["measured"]) for n, r in serial.items()}
    growth = per_cell[counts[-1]] / per_cell[counts[0]] if len(counts) > 1 else None
    env = environment("cpu", "float32")

    print(f"matrix: pytest harness/ (checks {args.checks or 'all'}, adapters {args.adapters or 'all'}); "
          f"{env['cpu_count']} CPUs, load average {env['load_average']:.2f}; interpreter start-up "
          f"({STARTUP_CODE}) {startup:.2f} s")
    print(f"{'run':<22} {'cells':>5} {'measured':>8} {'wall s':>8} {'compute s':>10} {'wall/measured s':>15} "
          f"{'overhead':>9}  statuses")
    rows = []
    for n, r in [*[(n, serial[n]) for n in counts], (len(largest), parallel)]:
        label = f"-n {r['workers']}, {n} spec{'s' if n > 1 else ''}"
        ovh = r["wall_s"] / (startup + r["compute_s"]) - 1
        statuses = " ".join(f"{k}={v}" for k, v in sorted(r["statuses"].items()))
        print(f"{label:<22} {r['cells']:>5} {r['measured']:>8} {r['wall_s']:>8.2f} {r['compute_s']:>10.2f} "
              f"{r['wall_s'] / max(1, r['measured']):>15.3f} {ovh:>8.0%}  {statuses}")
        rows.append({"benchmark": "matrix", "run": label, "workers": r["workers"], "specs": n,
                     "models": ",".join(r["models"]), "cells": r["cells"], "measured": r["measured"],
                     "wall_s": r["wall_s"],
                     "compute_s": r["compute_s"], "startup_s": startup, "overhead": ovh,
                     "statuses": statuses, "exit_code": r["exit_code"], "checks": args.checks or "all",
                     "adapters": args.adapters or "all", "quick": args.quick})
    if direct is not None:
        print(f"in-process, no pytest ({len(largest)} specs): model building {direct['build_s']:.2f} s, checks "
              f"{direct['compute_s']:.2f} s for {direct['cells']} cells (rows' duration_s: {full['compute_s']:.2f} s)")
    print(f"-n 0 {len(largest)} specs: {full['wall_s']:.2f} s = start-up {startup:.2f} + checks {full['compute_s']:.2f} "
          f"+ around them {full['wall_s'] - startup - full['compute_s']:.2f} (collection, model building, report "
          f"making beyond the call, plots, Parquet)")
    for row in rows:
        row.update(speedup=speedup, overhead_full=overhead, cell_cost_growth=growth,
                   direct_build_s=direct["build_s"] if direct else None,
                   direct_compute_s=direct["compute_s"] if direct else None, **env)
    if not args.no_save:
        print(f"appended to {append_parquet('matrix', rows).relative_to(ROOT)}")
    print(f"matrix speedup={speedup:.3f} overhead={overhead:.3f} cell_cost_growth={fmt_ratio(growth)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
