"""Result rows and their Parquet files.

Every matrix test writes one row. Rows go to ``<results>/runs/<run_id>/part-<worker>.parquet``: one
part per xdist worker (or ``main``), rewritten atomically (temp file + rename) after every test,
so an interrupted or crashing run still leaves whole files holding every finished row.
``run.json`` beside them says what the run was meant to cover, so readers can tell complete runs
from partial ones.
"""
from __future__ import annotations

import json
import math
import os
import platform
import socket
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

STATUSES = ("pass", "fail", "error", "xfail", "xpass", "skip", "inconclusive", "timeout", "n/a")

SCHEMA = pa.schema([
    ("run_id", pa.string()), ("started_at", pa.string()), ("finished_at", pa.string()),
    ("model", pa.string()), ("spec", pa.string()), ("variant", pa.string()), ("family", pa.string()),
    ("code_source", pa.string()), ("adapter", pa.string()), ("check", pa.string()),
    ("status", pa.string()), ("metric", pa.float64()), ("threshold", pa.float64()), ("message", pa.string()),
    ("expected_failure", pa.string()), ("duration_s", pa.float64()),
    ("device", pa.string()), ("dtype", pa.string()),
    ("torch_version", pa.string()), ("transformers_version", pa.string()), ("peft_version", pa.string()),
    ("python_version", pa.string()), ("git_commit", pa.string()), ("worker", pa.string()),
    ("kv_layout", pa.string()), ("concat_dim", pa.int64()), ("num_virtual_tokens", pa.int64()),
    ("nodeid", pa.string()), ("details", pa.string()),
])
COLUMNS = [f.name for f in SCHEMA]


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + os.urandom(3).hex()


def library_versions() -> dict[str, str]:
    import peft
    import torch
    import transformers

    return {"torch": torch.__version__.split("+")[0], "transformers": transformers.__version__,
            "peft": peft.__version__, "python": platform.python_version()}


def git_commit(cwd: Path | None = None) -> str:
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=cwd,
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def normalise_row(row: dict) -> dict:
    """Every column present, of its type; details as JSON text."""
    out = {c: row.get(c) for c in COLUMNS}
    if not isinstance(out["details"], (str, type(None))):
        out["details"] = json.dumps(out["details"], default=_jsonable)
    for col in ("metric", "threshold", "duration_s"):
        v = out[col]
        out[col] = float(v) if v is not None and not (isinstance(v, float) and math.isnan(v)) else None
    if out["status"] not in STATUSES:
        raise ValueError(f"status {out['status']!r} is not one of {STATUSES}")
    return out


def _jsonable(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return str(x)


def write_atomically(rows: list[dict], path: Path) -> None:
    """Write all rows to ``path`` so that readers only ever see a whole file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([normalise_row(r) for r in rows], schema=SCHEMA)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class PartWriter:
    """One worker's rows; every ``add`` rewrites the part file whole."""

    def __init__(self, run_dir: Path, worker: str):
        # The host is in the name so parts of one run from several machines can share a folder.
        host = "".join(c if c.isalnum() or c in "-_." else "_" for c in socket.gethostname()) or "host"
        self.path = Path(run_dir) / f"part-{host}-{worker}.parquet"
        # A reused run id keeps what this part already holds (readers keep a cell's latest row).
        self.rows: list[dict] = pq.read_table(self.path).to_pylist() if self.path.exists() else []

    def add(self, row: dict) -> None:
        self.rows.append(normalise_row(row))
        write_atomically(self.rows, self.path)


def write_run_meta(run_dir: Path, meta: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=".run.json.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, run_dir / "run.json")


def read_run_meta(run_dir: Path) -> dict:
    p = Path(run_dir) / "run.json"
    return json.loads(p.read_text()) if p.exists() else {}


def read_run(run_dir: Path) -> pd.DataFrame:
    """All rows of a run (every part file; parts from several machines merge here)."""
    parts = sorted(Path(run_dir).glob("part-*.parquet"))
    if not parts:
        return pd.DataFrame(columns=COLUMNS)
    frames = [pq.read_table(p).to_pandas() for p in parts]
    df = pd.concat(frames, ignore_index=True)
    # A cell written twice (a crash row, then a retry) keeps its latest row.
    return df.sort_values("finished_at", kind="stable").drop_duplicates(
        ["model", "code_source", "adapter", "check"], keep="last").reset_index(drop=True)


_RUN_ID_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def check_run_id(name: str) -> str:
    """A run id is a plain folder name under runs/ (no paths, nothing hidden)."""
    if not name or len(name) > 100 or name.startswith(".") or not set(name) <= _RUN_ID_CHARS:
        raise ValueError(f"{name!r} is not a plain run name: use letters, digits, '-', '_' and '.' (not first)")
    return name


def settings_conflict(meta: dict, settings: dict) -> str | None:
    """Why a run id that already holds rows cannot take rows made with other settings, or None."""
    diff = [f"{k}={meta[k]!r} (now {v!r})" for k, v in settings.items() if k in meta and meta[k] != v]
    if not diff:
        return None
    return (f"run id {meta.get('run_id')!r} was started with {', '.join(diff)}: its rows would not be comparable; "
            f"use another --run-id")


def runs_root(results_dir: Path) -> Path:
    return Path(results_dir) / "runs"


def list_runs(results_dir: Path) -> list[Path]:
    root = runs_root(results_dir)
    if not root.exists():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and (any(p.glob("part-*.parquet")) or (p / "run.json").exists())),
                  key=lambda p: (read_run_meta(p).get("started_at", ""), p.name))


def latest_run(results_dir: Path) -> Path | None:
    runs = list_runs(results_dir)
    return runs[-1] if runs else None
