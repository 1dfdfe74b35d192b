"""Runs written straight into the results store (the matrix's Parquet parts and run.json), for tests
of what reads runs: seconds instead of a matrix session, with exactly the statuses a test needs."""
from __future__ import annotations

from pathlib import Path

from harness.reporting import results

MESSAGES = {"pass": "relative error 3.1e-07 <= 1e-04", "fail": "relative error 4.0e-01 > 1e-04: differs from the "
            "full-context logits", "xfail": "RuntimeError: Sizes of tensors must match except in dimension 1",
            "error": "ValueError: bad shape", "skip": "remote code is opt-in", "inconclusive": "control could not fail",
            "xpass": "passed", "timeout": "ran past 600 s", "n/a": "no attention KV cache"}


def cell_id(model: str, adapter: str, check: str) -> str:
    return f"{model}-{adapter}-{check}"


def write_run(results_dir: Path, run_id: str, cells: dict[tuple[str, str, str], str], *, family=None,
              finished: bool = True, extra_expected: tuple[str, ...] = (), parts: int = 2) -> Path:
    """A run of ``cells`` ({(model, adapter, check): status}) under ``results_dir/runs/run_id``,
    spread over ``parts`` part files as xdist workers write them. ``extra_expected``: cell ids run.json
    promises but no row holds (an interrupted run)."""
    run = results.run_dir_for(Path(results_dir), run_id)
    rows = []
    for (model, adapter, check), status in cells.items():
        rows.append({
            "run_id": run_id, "started_at": "2026-11-29T10:00:00+00:00", "finished_at": "2026-11-29T10:01:00+00:00",
            "model": model, "spec": model.split("-")[0], "variant": "default",
            "family": (family or {}).get(model, model.split("-")[0]), "code_source": "transformers",
            "adapter": adapter, "check": check, "status": status, "metric": 1e-7, "threshold": 1e-4,
            "message": f"{MESSAGES[status]} ({model} {adapter} {check})",
            "expected_failure": "the spec declares it" if status in ("xfail", "xpass") else None,
            "duration_s": 0.5, "device": "cpu", "dtype": "float32", "torch_version": "2.13.0",
            "transformers_version": "5.24.0", "peft_version": "0.21.2", "python_version": "3.11",
            "git_commit": "abc", "worker": "gw0", "kv_layout": "[b, h, s, d]", "concat_dim": 2,
            "num_virtual_tokens": 3, "nodeid": f"harness/test_matrix.py::test_cell[{cell_id(model, adapter, check)}]",
            "steps": 2, "seed": 0,
        })
    for n in range(parts):
        chunk = rows[n::parts]
        if chunk:
            results.write_atomically(chunk, run / f"part-host-{100 + n}-gw{n}.parquet")
    ids = sorted([cell_id(*key) for key in cells] + list(extra_expected))
    results.write_run_meta(run, {"run_id": run_id, "started_at": "2026-11-29T10:00:00+00:00",
                                 "finished_at": "2026-11-29T10:02:00+00:00" if finished else None,
                                 "expected_cells": len(ids), "expected_cell_ids": ids, "device": "cpu",
                                 "dtype": "float32", "steps": 2, "seed": 0})
    return run
