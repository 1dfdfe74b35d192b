"""``--shard K/N``: one run split over N machines (a Slurm job array, a CI job matrix), merged into one run.

Every shard computes the same split, so none has to talk to the others: the cells (and spec-file
problems) of the whole run are weighed by their past durations (``duration_s`` of earlier rows)
and dealt out longest first, each to the shard with the least work so far (ties: the lower shard,
then the cell id). The weights come only from runs named with ``--shard-durations`` (default: the
committed ``results/baseline/``), never from whatever happens to be in a machine's results folder,
because two machines with different histories would split differently and lose or repeat cells.
A cell with no past duration weighs the median of those known (1 s when none is).

``--shard-by model`` keeps every cell of one model row on one shard (one model load per shard, for
real checkpoints that take a minute to load); the default deals single cells, which evens out best.

Each shard writes its rows to its own part files (named with the shard) under the shared run id and
``shard-K-of-N.json`` beside ``run.json``; ``run.json`` holds the whole run's cells and N. The run
reads complete only when all N shard files say finished and every cell has its row
(harness/reporting/results.py ``shard_state``). Docs: docs/SHARDS.md.

Why not pytest-split: it weighs tests from a ``.test_durations`` JSON that ``--store-durations``
writes, keyed by node id, and deselects after collection; our durations already live in the result
rows, and run.json must name the whole run's cells and this shard's before any test runs (so a
missing shard shows as an incomplete run). Owning the split is ~60 lines and no new dependency.
"""
from __future__ import annotations

import hashlib
import json
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from harness.reporting import results

SHARD_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
DEFAULT_DURATIONS = Path("results") / "baseline"
UNKNOWN_WEIGHT_S = 1.0


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based, as Slurm's array ids and CI matrices count
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass
class Plan:
    """What this session runs of the whole run."""

    shard: Shard | None
    all_ids: list[str]  # every cell of the run (all shards), sorted
    ids: list[str]  # this shard's cells
    digest: str = ""  # of the whole split: shards of one run must agree on it
    seconds: float = 0.0  # this shard's expected work, from past durations
    sources: list[str] = field(default_factory=list)


def parse(text: str) -> Shard:
    m = SHARD_RE.match(str(text))
    fix = "write K/N with 1 <= K <= N, e.g. --shard 2/4 (Slurm: --shard $((SLURM_ARRAY_TASK_ID))/4)"
    if not m:
        raise ValueError(f"--shard {text!r}: {fix}")
    index, count = int(m.group(1)), int(m.group(2))
    if count < 1 or not 1 <= index <= count:
        raise ValueError(f"--shard {text!r}: shard {index} of {count} does not exist; {fix}")
    return Shard(index, count)


def add_options(group) -> None:
    group.addoption("--shard", default=None, metavar="K/N",
                    help="run only shard K of N of the cells (split by past durations); shards of one --run-id merge into one run")
    group.addoption("--shard-durations", action="append", default=[], metavar="RUN_DIR",
                    help="run folder(s) whose duration_s weigh the split (default: results/baseline); every shard must use the same")
    group.addoption("--shard-by", default="cell", choices=("cell", "model"),
                    help="deal single cells (evenest) or whole model rows (one model load per shard)")


# ----------------------------------------------------------------------------- the split
def cell_id(nodeid: str) -> str:
    """``harness/test_matrix.py::test_cell[llama-harness-accepts]`` -> ``llama-harness-accepts``."""
    return nodeid.split("[", 1)[-1].rstrip("]") if "[" in nodeid else nodeid


def past_durations(run_dirs) -> dict[str, float]:
    """Cell id -> median ``duration_s`` over the given runs' rows (readable rows only)."""
    seen: dict[str, list[float]] = {}
    for run in run_dirs:
        df = results.read_run(Path(run))
        if not len(df):
            continue
        for nodeid, seconds in zip(df["nodeid"], df["duration_s"]):
            if isinstance(nodeid, str) and seconds == seconds and seconds is not None:  # NaN != NaN
                seen.setdefault(cell_id(nodeid), []).append(float(seconds))
    return {k: statistics.median(v) for k, v in seen.items()}


def split(ids, durations: dict[str, float], count: int, group_of=None) -> list[list[str]]:
    """``ids`` dealt into ``count`` lists of near-equal total duration, deterministically.

    ``group_of(id)``: ids with one group go to one shard together (default: every id alone).
    Greedy longest-first (LPT): within 4/3 of the best possible split, and independent of the
    order ``ids`` come in."""
    ids = sorted(set(ids))
    known = [durations[i] for i in ids if i in durations]
    default = statistics.median(known) if known else UNKNOWN_WEIGHT_S
    groups: dict[str, list[str]] = {}
    for i in ids:
        g = group_of(i) if group_of else None
        groups.setdefault(i if g is None else str(g), []).append(i)  # no group: the id alone
    weight = {g: sum(durations.get(i, default) for i in members) for g, members in groups.items()}
    parts: list[list[str]] = [[] for _ in range(count)]
    loads = [0.0] * count
    for g in sorted(groups, key=lambda g: (-weight[g], g)):
        k = min(range(count), key=lambda j: (loads[j], j))
        parts[k].extend(groups[g])
        loads[k] += weight[g]
    return [sorted(p) for p in parts]


def digest(parts: list[list[str]]) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def plan(option, ids, model_of, root: Path) -> Plan:
    """This session's share of ``ids`` (every cell id of the run). ValueError for a bad --shard or
    a --shard-durations folder that is not a run."""
    all_ids = sorted(set(ids))
    if not option.shard:
        return Plan(None, all_ids, all_ids)
    shard = parse(option.shard)
    if not getattr(option, "run_id", None):
        raise ValueError(f"--shard {shard} needs --run-id NAME, the same on every shard, so that their rows merge "
                         f"into one run")
    sources = [Path(p) for p in option.shard_durations]
    for p in sources:
        if not results.is_run_dir(p):
            raise ValueError(f"--shard-durations {p}: not a run folder (it holds no run.json or part-*.parquet)")
    if not sources and (root / DEFAULT_DURATIONS).is_dir():
        sources = [root / DEFAULT_DURATIONS]
    durations = past_durations(sources)
    group_of = model_of if option.shard_by == "model" else None
    parts = split(all_ids, durations, shard.count, group_of)
    mine = parts[shard.index - 1]
    known = [durations[i] for i in all_ids if i in durations]
    default = statistics.median(known) if known else UNKNOWN_WEIGHT_S
    return Plan(shard, all_ids, mine, digest(parts), sum(durations.get(i, default) for i in mine),
                [str(s) for s in sources])


# ----------------------------------------------------------------------------- the run's records
def shard_meta(plan_: Plan, started: str) -> dict:
    """What ``shard-K-of-N.json`` says at the start (``finished_at`` is set at the end)."""
    import socket

    return {"shard": str(plan_.shard), "index": plan_.shard.index, "count": plan_.shard.count,
            "expected_cells": len(plan_.ids), "cell_ids": plan_.ids, "split_digest": plan_.digest,
            "expected_seconds": round(plan_.seconds, 3), "durations_from": plan_.sources,
            "host": socket.gethostname(), "started_at": started, "finished_at": None}


def part_tag(worker: str, plan_: Plan | None) -> str:
    """The part file's worker tag: with the shard in it, parts copied together from machines whose
    host names and pids happen to agree (containers) still never overwrite each other."""
    if plan_ is None or plan_.shard is None:
        return worker
    return f"{worker}-shard{plan_.shard.index}of{plan_.shard.count}"


def conflict(run_dir: Path, plan_: Plan) -> str | None:
    """A usage message when a shard of this run already in the folder split it differently (other
    --shard-durations or other cells): the union of the shards would not be the run. Else None."""
    for k in range(1, plan_.shard.count + 1):
        other, _ = results.read_json_checked(Path(run_dir) / results.shard_file_name(k, plan_.shard.count))
        if other.get("split_digest") not in (None, plan_.digest):
            return (f"--shard {plan_.shard}: shard {other.get('shard')} of run {Path(run_dir).name} split the cells "
                    f"differently (durations from {other.get('durations_from') or 'none'}; this one from "
                    f"{plan_.sources or 'none'}, or other options): give every shard the same options and --shard-durations")
    return None


def start(run_dir: Path, plan_: Plan, started: str) -> None:
    """Write this shard's file (after conflict() found none)."""
    results.write_run_meta(run_dir, shard_meta(plan_, started), results.shard_file_name(plan_.shard.index, plan_.shard.count))


def finish(run_dir: Path, plan_: Plan, exit_status: int) -> None:
    """Mark this shard finished (the run reads complete once every shard is, with every row in)."""
    name = results.shard_file_name(plan_.shard.index, plan_.shard.count)
    meta, _ = results.read_json_checked(Path(run_dir) / name)
    meta = meta or shard_meta(plan_, results.now())
    meta.update(finished_at=results.now(), exit_status=exit_status)
    results.write_run_meta(run_dir, meta, name)
