"""Result rows and their Parquet files.

Every matrix test writes one row. Rows go to
``<results>/runs/<run_id>/part-<host>-<pid>-<worker>.parquet``: one part per process (an xdist
worker, ``main`` or the ``controller``), rewritten atomically (temp file + rename) after every test,
so an interrupted or crashing run still leaves whole files holding every finished row. Host and pid
in the name mean two sessions sharing a run id never write the same file; a writer never reads or
rewrites another process's part. ``run.json`` beside the parts says what the run was meant to cover
and with which settings, so readers can tell complete runs from partial ones and a re-used run id
with other settings can be refused.

Readers never raise on damaged input: ``read_run_checked`` returns the readable rows and one line
per damaged file, so ``runs`` can list every readable run and the CLI can refuse with one line.
"""
from __future__ import annotations

import errno
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

# inconclusive: the check's control could not show the check can fail (never a pass);
# timeout: the cell ran past its time limit; n/a: the model has no attention KV cache (with a reason).
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
    # Settings that change a verdict, so rows of differently configured sessions can be told apart.
    ("steps", pa.int64()), ("seed", pa.int64()),
    # GPUs, real checkpoints and shards (null in older runs and on the CPU): the GPU's name, the
    # cell's peak GPU memory, the brief training's speed, which checkpoint at which revision.
    ("gpu_name", pa.string()), ("gpu_peak_memory_mib", pa.float64()), ("train_tokens_per_s", pa.float64()),
    ("checkpoint", pa.string()), ("checkpoint_revision", pa.string()), ("shard", pa.string()),
    # The attention implementation the cell's model ran (eager, sdpa, ...; "own": its code picks its own).
    ("attn_implementation", pa.string()),
])
COLUMNS = [f.name for f in SCHEMA]
ATTN_UNRECORDED = "default"  # what rows written before the attention axis read as
FLOAT_COLUMNS = [f.name for f in SCHEMA if pa.types.is_floating(f.type)]
INT_COLUMNS = [f.name for f in SCHEMA if pa.types.is_integer(f.type)]
# A cell is (model, code source, adapter, check); without these and a status a row means nothing.
CELL_KEY = ["model", "code_source", "adapter", "check"]
REQUIRED_COLUMNS = CELL_KEY + ["status"]
# run.json keys whose values must agree when a run id is re-used (settings_conflict).
SETTINGS_KEYS = ("steps", "dtype", "device", "seed", "num_virtual_tokens_override", "code_source",
                 # shards of one run must cut it into the same N pieces (K differs, and is fine)
                 "shard_count")


class ResultsWriteError(OSError):
    """A row could not be written (full disk, read-only folder...); every earlier row is intact.
    An OSError, so code that handles file errors handles it; ``errno`` is the cause's."""

    def __init__(self, message: str, cause_errno: int | None = None):
        super().__init__(message)  # one argument: str() is the message alone, no "[Errno n]"
        self.errno = cause_errno


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
    for col in FLOAT_COLUMNS:
        v = out[col]
        out[col] = None if _missing(v) else float(v)
    for col in INT_COLUMNS:
        v = out[col]
        out[col] = None if _missing(v) else int(v)
    if out["status"] not in STATUSES:
        raise ValueError(f"status {out['status']!r} is not one of {STATUSES}")
    return out


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _jsonable(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return str(x)


# ----------------------------------------------------------------------------- run ids and settings
MAX_RUN_ID = 100


def check_run_id(name) -> str:
    """``name`` if it is a plain folder name under results/runs; ValueError saying why otherwise.
    A run id becomes a path: '../x' or 'a/b' would write outside results/runs."""
    fix = ("use only letters, digits, '-', '_' and '.', not starting with '.', "
           f"at most {MAX_RUN_ID} characters (e.g. nightly-2026-01-31)")
    if not isinstance(name, str) or not name:
        raise ValueError(f"run id {name!r} is empty: {fix}")
    if len(name) > MAX_RUN_ID:
        raise ValueError(f"run id {name[:20]!r}... is {len(name)} characters long: {fix}")
    bad = sorted({c for c in name if not (c.isascii() and (c.isalnum() or c in "._-"))})
    if bad:
        raise ValueError(f"run id {name!r} contains {', '.join(repr(c) for c in bad)}: {fix}")
    if name.startswith("."):
        raise ValueError(f"run id {name!r} starts with '.': {fix}")
    return name


def run_dir_for(results_dir: Path, run_id: str) -> Path:
    """The folder of run ``run_id`` under ``results_dir`` (the id checked by check_run_id)."""
    return runs_root(results_dir) / check_run_id(run_id)


def settings_conflict(meta: dict, settings: dict) -> str | None:
    """Why a session with ``settings`` must not add rows to the run whose run.json is ``meta``, or
    None. Only SETTINGS_KEYS present in both are compared (an older run.json lacks some): rows of a
    60-step and a 5-step session must never make one "complete" run."""
    before, after = [], []
    for key in SETTINGS_KEYS:
        if key not in meta or key not in settings:
            continue
        old, new = meta[key], settings[key]
        if _canonical(old) != _canonical(new):
            before.append(f"{key}={_shown(old)}")
            after.append(f"{key}={_shown(new)}")
    if not before:
        return None
    run_id = meta.get("run_id", "?")
    return (f"run id {run_id} was started with {', '.join(before)}, this run has {', '.join(after)}: "
            f"use another --run-id (or none for a fresh one)")


def _canonical(value) -> str:
    # run.json went through JSON: tuples came back as lists, so compare the JSON text.
    return json.dumps(value, sort_keys=True, default=str)


def _shown(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


# ----------------------------------------------------------------------------- writing
def _umask() -> int:
    """The process umask. Read from /proc where it exists: setting it to read it back is racy."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temp_beside(path: Path) -> str:
    """An empty temp file next to ``path`` with the mode a plain open() would give it: mkstemp makes
    0600, which would hide results from everyone else sharing the folder."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())
    return tmp


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def write_atomically(rows: list[dict], path: Path, exclusive: bool = False) -> Path:
    """Write all rows to ``path`` so that readers only ever see a whole file. With ``exclusive``,
    never replace an existing file: ``path`` is taken, or ``-2``, ``-3``... added before the suffix
    (a pid re-used by a later session on this host). Returns the path written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([normalise_row(r) for r in rows], schema=SCHEMA)
    tmp = _temp_beside(path)
    try:
        pq.write_table(table, tmp)
        if not exclusive:
            os.replace(tmp, path)
            return path
        return _claim(tmp, path)
    finally:
        if os.path.exists(tmp):
            _unlink_quietly(tmp)


def _claim(tmp: str, path: Path) -> Path:
    """Give the whole file ``tmp`` a name nobody has: a hard link fails if the name exists, so two
    writers can never take the same one."""
    for n in range(1, 1000):
        candidate = path if n == 1 else path.with_name(f"{path.stem}-{n}{path.suffix}")
        try:
            os.link(tmp, candidate)
            return candidate
        except FileExistsError:
            continue
        except OSError as e:  # a file system without hard links: check, then rename
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            if not candidate.exists():
                os.replace(tmp, candidate)
                return candidate
    raise FileExistsError(errno.EEXIST, f"no free part name next to {path}")


def _safe_name(text: str, fallback: str) -> str:
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in text) or fallback


class PartWriter:
    """One process's rows; every ``add`` rewrites this process's own part file whole.

    The file is ``part-<host>-<pid>-<worker>.parquet``: the host so parts from several machines can
    share a folder, the pid so two sessions with one run id on one host never share a file. A
    re-used run id adds a new part; readers keep each cell's latest row across parts.
    """

    def __init__(self, run_dir: Path, worker: str):
        host = _safe_name(socket.gethostname(), "host")
        self.dir = Path(run_dir)
        self.path = self.dir / f"part-{host}-{os.getpid()}-{_safe_name(str(worker), 'worker')}.parquet"
        self.rows: list[dict] = []
        self._claimed = False

    def add(self, row: dict) -> None:
        """Append ``row`` and rewrite the part. ValueError for a malformed row; ResultsWriteError
        when the file cannot be written: the file on disk then still holds every earlier row (the
        row stays pending here and is written with the next successful add)."""
        norm = normalise_row(row)
        try:  # a row Parquet cannot hold is refused here, before it could block every later add
            pa.Table.from_pylist([norm], schema=SCHEMA)
        except (pa.ArrowException, TypeError, ValueError) as e:
            raise ValueError(f"row of {norm.get('nodeid') or norm.get('check')} cannot be stored: {e}") from e
        self.rows.append(norm)
        try:
            self.path = write_atomically(self.rows, self.path, exclusive=not self._claimed)
        except OSError as e:
            reason = e.strerror or str(e) or type(e).__name__
            raise ResultsWriteError(f"cannot write results to {self.path}: {reason}; every row written "
                                    f"before is intact in {self.dir}", e.errno) from e
        self._claimed = True


def write_run_meta(run_dir: Path, meta: dict, name: str = "run.json") -> None:
    """run.json (or a shard's file), atomically; ResultsWriteError when it cannot be written. Keys
    that readers derive (DERIVED_KEYS) are never stored."""
    run_dir = Path(run_dir)
    path = run_dir / name
    meta = {k: v for k, v in meta.items() if k not in DERIVED_KEYS}
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        tmp = _temp_beside(path)
        try:
            with open(tmp, "w") as f:
                json.dump(meta, f, indent=2, sort_keys=True)
                f.write("\n")
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                _unlink_quietly(tmp)
    except OSError as e:
        raise ResultsWriteError(f"cannot write {path}: {e.strerror or e}", e.errno) from e


# ----------------------------------------------------------------------------- reading
def read_run_meta_checked(run_dir: Path) -> tuple[dict, str | None]:
    """run.json as a dict ({} when absent) and a problem line when it exists but is unreadable.
    A sharded run's ``finished_at`` is its shards' (see shard_state), and ``shards`` says which are in."""
    meta, problem = read_json_checked(Path(run_dir) / "run.json")
    if meta:
        shards = shard_state(run_dir, meta)
        if shards is not None:
            done = not shards["missing"] and not shards["split_mismatch"]
            meta = {**meta, "shards": shards, "finished_at": shards["finished_at"] if done else None}
    return meta, problem


def read_json_checked(p: Path) -> tuple[dict, str | None]:
    """A JSON object file as a dict ({} when absent) and a problem line when it is unreadable."""
    try:
        text = p.read_text()
    except FileNotFoundError:
        return {}, None
    except (OSError, UnicodeDecodeError) as e:
        return {}, f"{p.name} unreadable ({_reason(e)})"
    try:
        meta = json.loads(text)
    except ValueError as e:
        return {}, f"{p.name} unreadable ({_reason(e)})"
    if not isinstance(meta, dict):
        return {}, f"{p.name} unreadable (holds a {type(meta).__name__}, not an object)"
    return meta, None


# ----------------------------------------------------------------------------- shards
# A run split over N machines (harness/matrix/shards.py): run.json holds the whole run (its cells,
# shard_count N); each shard K writes shard-K-of-N.json (its cells, split digest, start, finish).
DERIVED_KEYS = ("shards",)


def shard_file_name(index: int, count: int) -> str:
    return f"shard-{index}-of-{count}.json"


def shard_state(run_dir: Path, meta: dict) -> dict | None:
    """Which shards of a sharded run are in: {count, finished, missing, finished_at, split_mismatch,
    expected_cells (per shard)}; None for an unsharded run. A shard is in when its file says
    finished; shards that split the run differently (another --shard-durations) make it unfinished."""
    count = meta.get("shard_count")
    if not isinstance(count, int) or count < 1:
        return None
    infos = {}
    for k in range(1, count + 1):
        info, _ = read_json_checked(Path(run_dir) / shard_file_name(k, count))
        if info:
            infos[k] = info
    finished = sorted(k for k, i in infos.items() if i.get("finished_at"))
    digests = {i.get("split_digest") for i in infos.values()}
    return {"count": count, "finished": finished, "missing": [k for k in range(1, count + 1) if k not in finished],
            "finished_at": max((str(infos[k]["finished_at"]) for k in finished), default=None),
            "split_mismatch": len(digests) > 1,
            "expected_cells": {str(k): i.get("expected_cells") for k, i in sorted(infos.items())}}


def read_run_meta(run_dir: Path) -> dict:
    """run.json as a dict; {} when absent or damaged (read_run_meta_checked says which)."""
    return read_run_meta_checked(run_dir)[0]


def _reason(e: BaseException, noise: str = "") -> str:
    """The first line of an error, without ``noise``, short enough for one line."""
    lines = str(e).replace(noise, "").splitlines() if noise else str(e).splitlines()
    text = next((ln.strip() for ln in lines if ln.strip()), "") or type(e).__name__
    return text if len(text) <= 200 else text[:199] + "…"


def part_files(run_dir: Path) -> list[Path]:
    """The run's parts, oldest write first: equal finished_at times then favour the newer part."""
    def key(p: Path):
        try:
            return (p.stat().st_mtime, p.name)
        except OSError:
            return (0.0, p.name)
    try:
        return sorted(Path(run_dir).glob("part-*.parquet"), key=key)
    except OSError:
        return []


def _read_part(path: Path) -> tuple[pd.DataFrame | None, str | None]:
    try:
        frame = pq.read_table(path).to_pandas()
    except Exception as e:  # noqa: BLE001 - whatever a damaged file raises, it is one damaged part
        # pyarrow repeats the whole path the line already names: keep what is wrong with the file.
        noise = f"Could not open Parquet input source '{path}': "
        return None, f"{path.name} unreadable ({_reason(e, noise)})"
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        return None, f"{path.name} lacks column(s) {', '.join(missing)}"
    # Parts written before a column existed read it as null; an unrecorded attention implementation
    # was the model's default one.
    frame = frame.reindex(columns=COLUMNS)
    frame["attn_implementation"] = frame["attn_implementation"].fillna(ATTN_UNRECORDED)
    unknown = ~frame["status"].isin(STATUSES)
    if unknown.any():
        values = sorted({str(v) for v in frame.loc[unknown, "status"]})
        return None, f"{path.name} has {int(unknown.sum())} row(s) with unknown status {', '.join(values)}"
    return frame, None


def read_run_checked(run_dir: Path) -> tuple[pd.DataFrame, list[str]]:
    """All readable rows of a run (every part; parts from several processes and machines merge
    here), each cell's latest row only, and one line per damaged file. Never raises."""
    frames, problems = [], []
    _, meta_problem = read_run_meta_checked(run_dir)
    if meta_problem:
        problems.append(meta_problem)
    for part in part_files(run_dir):
        frame, problem = _read_part(part)
        if problem:
            problems.append(problem)
        elif len(frame):
            frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=COLUMNS), problems
    df = pd.concat(frames, ignore_index=True)
    # A cell written twice (a crash row then a retry, or a re-used run id) keeps its latest row; a
    # row without a time counts as oldest.
    df = df.sort_values("finished_at", kind="stable", na_position="first").drop_duplicates(
        CELL_KEY, keep="last").reset_index(drop=True)
    return df, problems


def read_run(run_dir: Path) -> pd.DataFrame:
    """All readable rows of a run; damaged parts are left out (read_run_checked names them)."""
    return read_run_checked(run_dir)[0]


def runs_root(results_dir: Path) -> Path:
    return Path(results_dir) / "runs"


def is_run_dir(path: Path) -> bool:
    """A folder holding run.json or a part file (damaged or not)."""
    path = Path(path)
    try:
        return path.is_dir() and ((path / "run.json").exists() or any(path.glob("part-*.parquet")))
    except OSError:
        return False


def list_runs(results_dir: Path) -> list[Path]:
    """Every run folder, oldest first; damaged runs included (read_run_checked tells). Never raises."""
    try:
        candidates = [p for p in runs_root(results_dir).iterdir() if is_run_dir(p)]
    except OSError:
        return []
    return sorted(candidates, key=lambda p: (str(read_run_meta(p).get("started_at") or ""), p.name))


def latest_run(results_dir: Path) -> Path | None:
    runs = list_runs(results_dir)
    return runs[-1] if runs else None
