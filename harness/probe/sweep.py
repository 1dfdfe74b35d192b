"""``prefix-compat sweep``: probe + the checks over every causal-LM model type of the installed
transformers, into one run.

    prefix-compat sweep [--types llama,mamba] [--jobs 2] [--per-worker 4] [--adapters harness,peft]
                        [--steps 20] [--probe-timeout 120] [--cell-timeout 180] [--run-id ID] [-o docs/SWEEP.md]

Per model type: the probe (``harness.probe.probe_model_type``) gives one ``probe`` row (``pass`` = probe
ok, ``n/a`` = no attention KV cache, ``error`` / ``timeout`` = probe-failed; the message says what
blocked it); for an ok draft the checks run for each adapter, through the matrix's own Bench and
verdict (harness/matrix/verdict.py), one row each. Types run a few at a time in spawned worker
processes, each step under SIGALRM; the parent is the only writer (rows come back over a pipe of the
worker's own), so a worker that crashes or hangs past the limit is killed and costs only its own type's
rows: the step it was on becomes an ``error`` / ``timeout`` row, the rest of its type ``error`` rows
saying why.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import wait as wait_ready
from pathlib import Path

from harness.core import names
from harness.reporting import results

PROBE_CHECK = "probe"  # the check name of a type's probe row
SWEEP_ADAPTERS = ("harness", "peft")
# probe status -> row status: the results store's statuses (probe-failed is an error: nothing measured)
PROBE_STATUS = {"ok": "pass", "n/a": "n/a", "probe-failed": "error"}


@dataclass
class SweepSettings:
    adapters: tuple = SWEEP_ADAPTERS
    checks: tuple = names.CHECKS
    steps: int = 20  # train steps: fewer than the matrix's 60 (the sweep runs ~150 types), recorded per row
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    probe_timeout: float = 120.0
    cell_timeout: float = 180.0
    jobs: int = 2
    per_worker: int = 4  # model types per worker process before a fresh one (leaks and state stay contained)
    grace: float = 60.0  # a worker still on a step this long past the step's own limit is stuck in C code: killed
    probe: str = "harness.probe:probe_model_type"  # module:function, model type -> ProbeResult


def spec_name(model_type: str) -> str:
    """A spec name (and the rows' ``model``) for a model type: 'gpt-sw3' -> 'gpt_sw3'."""
    return re.sub(r"[^a-z0-9._]", "_", model_type.lower())


def causal_lm_types() -> list[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def select_types(wanted: str | None) -> list[str]:
    """Every causal-LM type, or the ``--types`` subset; ValueError naming an unknown type."""
    from harness.matrix.cells import split, unknown_names

    known = causal_lm_types()
    chosen = split(wanted)
    if not chosen:
        return known
    problem = unknown_names(chosen, known, "--types")
    if problem:
        raise ValueError(problem.split("; known:")[0] + f" (not a causal-LM model type of this transformers; "
                         f"{len(known)} are)")
    return list(dict.fromkeys(chosen))


# ----------------------------------------------------------------------------- rows
def base_row(model_type: str, settings: SweepSettings, versions: dict) -> dict:
    name = spec_name(model_type)
    return {"model": name, "spec": name, "variant": "default", "family": model_type, "code_source": "transformers",
            "device": settings.device, "dtype": settings.dtype, "steps": settings.steps, "seed": settings.seed,
            "torch_version": versions["torch"], "transformers_version": versions["transformers"],
            "peft_version": versions["peft"], "python_version": versions["python"]}


def cell_id(model_type: str, adapter: str, check: str) -> str:
    return f"{spec_name(model_type)}-{check}" if adapter == "-" else f"{spec_name(model_type)}-{adapter}-{check}"


def probe_row(model_type: str, status: str, reason: str, seconds: float, settings, versions, details=None) -> dict:
    """The ``probe`` row of a type: status ok / n/a / probe-failed as pass / n/a / error (timeout when
    the probe ran past its limit); the message starts with the probe's own status."""
    row_status = "timeout" if "time limit" in reason and status == "probe-failed" else PROBE_STATUS[status]
    return {**base_row(model_type, settings, versions), "adapter": "-", "check": PROBE_CHECK, "status": row_status,
            "message": f"{status}: {reason}" if reason else status, "duration_s": seconds,
            "nodeid": f"sweep[{cell_id(model_type, '-', PROBE_CHECK)}]", "details": {"probe": status, **(details or {})}}


def lost_row(model_type: str, adapter: str, check: str, status: str, message: str, settings, versions) -> dict:
    """A row for a step whose worker died or hung (or that never ran because of it)."""
    if check == PROBE_CHECK:
        reason = message if status != "timeout" else f"over the time limit: {message}"
        return probe_row(model_type, "probe-failed", reason, None, settings, versions)
    return {**base_row(model_type, settings, versions), "adapter": adapter, "check": check, "status": status,
            "message": message, "nodeid": f"sweep[{cell_id(model_type, adapter, check)}]"}


# ----------------------------------------------------------------------------- inside a worker
class _TimeLimit(BaseException):  # not an Exception: the probe's and checks' own handlers must not swallow it
    pass


def _alarm(signum, frame):
    raise _TimeLimit()


def _limited(seconds: float, fn, *args):
    import signal

    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(max(1, int(seconds)))
    try:
        return fn(*args)
    finally:
        signal.alarm(0)


def _probe(model_type: str, settings: SweepSettings, versions: dict):
    """(probe row, ProbeResult or None)."""
    import importlib

    module, _, function = settings.probe.partition(":")
    probe_model_type = getattr(importlib.import_module(module), function)
    start = time.time()
    try:
        r = _limited(settings.probe_timeout, probe_model_type, model_type)
    except _TimeLimit:
        return probe_row(model_type, "probe-failed", f"over the time limit ({settings.probe_timeout:g} s)",
                         time.time() - start, settings, versions), None
    except Exception as e:  # noqa: BLE001 - the probe itself crashed: a row that says so
        return probe_row(model_type, "probe-failed", f"the probe crashed: {type(e).__name__}: {e}"[:500],
                         time.time() - start, settings, versions), None
    details = {"notes": r.notes[:10], "conventions": list(r.conventions) if r.conventions else None,
               "attention_layers": r.attention_layers}
    return probe_row(model_type, r.status, r.reason, time.time() - start, settings, versions, details), r


def _check_row(cell, model, settings: SweepSettings, versions: dict) -> dict:
    """One check of one adapter on a drafted spec, settled as the matrix settles it."""
    import torch

    from harness.matrix.bench import Bench, Settings
    from harness.matrix.verdict import settle

    row = {**base_row(cell.spec.family, settings, versions), "adapter": cell.adapter, "check": cell.check,
           "kv_layout": str(cell.spec.kv.layout), "concat_dim": cell.spec.kv.concat_dim,
           "nodeid": f"sweep[{cell.id}]"}
    start = time.time()
    try:
        bench = Bench(cell, model, Settings(settings.device, getattr(torch, settings.dtype), settings.steps, settings.seed))
        row["num_virtual_tokens"] = bench.num_virtual_tokens
        v = _limited(settings.cell_timeout, settle, cell, bench, versions)
        row.update(status=v.status, message=v.message,
                   expected_failure=v.expected.reason if v.expected is not None else None)
        if v.measurement is not None:
            m = v.measurement
            row.update(metric=m.metric, threshold=m.threshold, details=m.details)
    except _TimeLimit:
        row.update(status="timeout", message=f"ran longer than --cell-timeout {settings.cell_timeout:g} s")
    except Exception as e:  # noqa: BLE001 - setting up the bench (the contract on the built model)
        row.update(status="error", message=f"{type(e).__name__}: {str(e)[:400]} (while setting up the cell)")
    row["duration_s"] = time.time() - start
    return row


class _Outbox:
    """A worker's end of its own pipe to the parent. Each message is sent whole before the worker goes on
    (no feeder thread, no lock shared with other workers): a worker that dies mid-message loses only its own
    pipe, where one multiprocessing.Queue shared by all workers stays locked by the dead writer and every
    later worker then blocks in its exit (measured in CI: the queue's feeder thread never joined)."""

    def __init__(self, conn):
        self.conn = conn

    def put(self, msg) -> None:
        self.conn.send(msg)


def _work(worker: str, types: list, settings_dict: dict, conn) -> None:
    """A worker process: probe each type, run the checks of the ok ones, send every row to the parent."""
    import warnings

    out = _Outbox(conn)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is ever fetched
    warnings.filterwarnings("ignore")
    import torch
    import transformers

    torch.set_num_threads(1)  # the parent runs --jobs workers side by side
    transformers.logging.set_verbosity_error()
    settings = SweepSettings(**settings_dict)
    versions = results.library_versions()
    for model_type in types:
        out.put((worker, "start", model_type, cell_id(model_type, "-", PROBE_CHECK)))
        row, result = _probe(model_type, settings, versions)
        out.put((worker, "row", model_type, row))
        out.put((worker, "probe", model_type, {"status": result.status if result else "probe-failed",
                                               "reason": row["message"], "yaml": _draft_text(result)}))
        if result is not None and result.status == "ok" and settings.checks:
            _run_checks(worker, model_type, result, settings, versions, out)
        out.put((worker, "done", model_type, None))


def _draft_text(result) -> str | None:
    import yaml

    return yaml.safe_dump(result.draft, sort_keys=False) if result is not None and result.status == "ok" else None


def load_drafted(model_type: str, draft_yaml: str):
    """The ModelSpec of a probe draft (named spec_name(model_type)), through the real loader."""
    import yaml

    from .pick import load_draft

    return load_draft(yaml.safe_load(draft_yaml), name=spec_name(model_type))


def _run_checks(worker, model_type, result, settings, versions, out) -> None:
    import torch

    from harness.core.models import build_model
    from harness.matrix.cells import Cell

    spec = load_drafted(model_type, _draft_text(result))
    cells = [Cell(spec, spec.variants[0], a, c, "transformers") for a in settings.adapters for c in settings.checks]
    out.put((worker, "plan", model_type, [(c.adapter, c.check) for c in cells]))
    out.put((worker, "start", model_type, f"{spec_name(model_type)}-build"))  # under the cell time limit
    try:
        model = _limited(settings.cell_timeout, build_model, spec, "transformers", settings.device,
                         getattr(torch, settings.dtype))
    except (Exception, _TimeLimit) as e:  # noqa: BLE001 - a build failure is an error row per cell, as in the matrix
        why = "timed out" if isinstance(e, _TimeLimit) else f"{type(e).__name__}: {str(e)[:300]}"
        for c in cells:
            out.put((worker, "row", model_type, lost_row(model_type, c.adapter, c.check, "error",
                                                         f"building the drafted model failed: {why}", settings,
                                                         versions)))
        return
    for c in cells:
        out.put((worker, "start", model_type, c.id))
        out.put((worker, "row", model_type, _check_row(c, model, settings, versions)))


# ----------------------------------------------------------------------------- the parent
@dataclass
class _Worker:
    proc: object
    types: list  # the types given to it, in order
    conn: object = None  # the parent's end of the worker's pipe; None once closed
    done: set = field(default_factory=set)
    current: str | None = None  # the type it is on
    step: str | None = None  # the cell id it is on
    since: float = 0.0
    planned: dict = field(default_factory=dict)  # type -> [(adapter, check)]
    written: dict = field(default_factory=dict)  # type -> {(adapter, check)}
    finished: float | None = None  # when it reported its last type done


@dataclass
class Outcome:
    probes: dict = field(default_factory=dict)  # type -> {"status", "reason", "yaml"}
    cell_ids: list = field(default_factory=list)  # every row's cell id, in the order written
    counts: dict = field(default_factory=dict)


def execute(types: list[str], settings: SweepSettings, sink, log=None) -> Outcome:
    """Run the sweep over ``types``; every row goes to ``sink(row)`` (run_id etc. are the sink's to add)."""
    ctx = mp.get_context("spawn")
    pending = deque(types[i:i + settings.per_worker] for i in range(0, len(types), settings.per_worker))
    workers: dict[str, _Worker] = {}
    outcome = Outcome()
    versions = results.library_versions()
    serial = 0
    log = log or (lambda text: None)

    def emit(model_type, row):
        sink(row)
        w = next((w for w in workers.values() if model_type in w.types), None)
        if w is not None:
            w.written.setdefault(model_type, set()).add((row["adapter"], row["check"]))
        outcome.cell_ids.append(row["nodeid"][len("sweep["):-1])
        outcome.counts[row["status"]] = outcome.counts.get(row["status"], 0) + 1

    def handle(msg):
        name, kind, model_type, payload = msg
        w = workers.get(name)
        if kind == "row":
            emit(model_type, payload)
            if payload["check"] != PROBE_CHECK:
                log(f"  {cell_id(model_type, payload['adapter'], payload['check'])}: {payload['status']}")
        elif kind == "probe":
            outcome.probes[model_type] = payload
            log(f"{model_type}: probe {payload['status']} {payload['reason'][:150] if payload['status'] != 'ok' else ''}")
        elif w is None:
            return
        elif kind == "start":
            w.current, w.step, w.since = model_type, payload, time.time()
        elif kind == "plan":
            w.planned[model_type] = [tuple(x) for x in payload]
        elif kind == "done":
            w.done.add(model_type)
            w.current, w.step, w.since = None, None, time.time()

    def drain(block_s: float) -> None:
        """Handle every message waiting on the workers' pipes (waiting up to ``block_s`` for the first)."""
        open_ = [w.conn for w in workers.values() if w.conn is not None]
        for conn in wait_ready(open_, timeout=block_s) if open_ else []:
            w = next(w for w in workers.values() if w.conn is conn)
            try:
                while conn.poll():
                    handle(conn.recv())
            except (EOFError, OSError, ValueError, TypeError, AttributeError, ImportError) as e:
                # the worker is gone (EOF), or died mid-message (a torn pickle): nothing more comes from it
                if not isinstance(e, EOFError):
                    log(f"{w.current or '?'}: a message from the worker could not be read ({type(e).__name__})")
                conn.close()
                w.conn = None

    def retire(name: str, kill: bool = False) -> None:
        """Stop following a worker: kill it if asked, read what is left on its pipe, close the pipe."""
        w = workers[name]
        if kill:
            w.proc.kill()
        w.proc.join()
        for _ in range(25):  # a dead worker's pipe ends in EOF (unless a process it started holds it open)
            if w.conn is None:
                break
            drain(0.2)
        if w.conn is not None:
            w.conn.close()
        del workers[name]

    def lost(w: _Worker, status: str, why: str) -> None:
        """The worker died or was killed: rows for its step and the rest of its type; the types it
        had not started go back to the queue (the one it was starting, when silent, is the lost one: a
        type that kills every worker must not be handed to fresh ones forever)."""
        t = w.current or next((x for x in w.types if x not in w.done), None)
        if t is not None and t not in w.done:
            written = w.written.get(t, set())
            if (("-", PROBE_CHECK)) not in written:
                emit(t, lost_row(t, "-", PROBE_CHECK, status, why, settings, versions))
            step_key = next(((a, c) for a, c in w.planned.get(t, []) if cell_id(t, a, c) == w.step), None)
            for a, c in w.planned.get(t, []):
                if (a, c) in written:
                    continue
                if (a, c) == step_key:
                    emit(t, lost_row(t, a, c, status, why, settings, versions))
                else:
                    emit(t, lost_row(t, a, c, "error", f"not run: {why} (on {w.step})", settings, versions))
            w.done.add(t)
        rest = [x for x in w.types if x not in w.done and x != t]
        if rest:
            pending.appendleft(rest)

    while pending or workers:
        while pending and len(workers) < settings.jobs:
            chunk = pending.popleft()
            serial += 1
            name = f"w{serial}"
            reader, writer = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_work, args=(name, chunk, asdict(settings), writer), daemon=True)
            proc.start()
            writer.close()  # the child holds its own copy: EOF here once the child is gone
            workers[name] = _Worker(proc, list(chunk), conn=reader, since=time.time())
        drain(0.5)
        for name, w in list(workers.items()):
            limit = (settings.probe_timeout if (w.step or "").endswith(f"-{PROBE_CHECK}") else settings.cell_timeout)
            if not w.proc.is_alive():
                retire(name)  # reads what it sent before exiting
                if w.proc.exitcode != 0 or set(w.types) - w.done:
                    lost(w, "error", f"the worker process died (exit code {w.proc.exitcode}) while running "
                                     f"{w.step or 'this type'}")
            elif set(w.types) <= w.done:
                # every type reported: a process that does not exit within the grace period is stuck in its
                # own shutdown, and nothing is lost
                w.finished = w.finished or time.time()
                if time.time() - w.finished > settings.grace:
                    retire(name, kill=True)
            elif time.time() - w.since > limit + settings.grace:
                # on a step past its limit where SIGALRM cannot reach (C code, a blocked signal), or silent
                # since it started or finished a type (w.since is reset on both)
                retire(name, kill=True)
                lost(w, "timeout", f"killed after {time.time() - w.since:.0f} s on {w.step or 'starting a type'} "
                                   f"(limit {limit:g} s, not interruptible)")
    return outcome


# ----------------------------------------------------------------------------- the command
def run_sweep(types: list[str], settings: SweepSettings, results_dir: Path, run_id: str | None = None,
              log=None) -> tuple[Path, Outcome]:
    """The sweep as one run under ``results_dir``/runs/<run_id>/ (run.json + one part file)."""
    run_id = run_id or results.new_run_id()
    run_dir = results.run_dir_for(Path(results_dir), run_id)
    started = results.now()
    meta_settings = {"steps": settings.steps, "dtype": settings.dtype, "device": settings.device,
                     "seed": settings.seed, "code_source": "default", "num_virtual_tokens_override": None}
    earlier, damaged = results.read_run_meta_checked(run_dir)
    if damaged or earlier:
        raise ValueError(f"--run-id {run_id}: {damaged or 'already used'}; a sweep is one fresh run, use another --run-id")
    expected = [cell_id(t, "-", PROBE_CHECK) for t in types]
    meta = {"run_id": run_id, "kind": "sweep", "started_at": started, "finished_at": None,
            "expected_cells": len(expected), "expected_cell_ids": expected, **meta_settings,
            "versions": results.library_versions(), "git_commit": results.git_commit(),
            "sweep": {"types": types, "adapters": list(settings.adapters), "checks": list(settings.checks),
                      "probe_timeout": settings.probe_timeout, "cell_timeout": settings.cell_timeout}}
    results.write_run_meta(run_dir, meta)
    writer = results.PartWriter(run_dir, "sweep")
    commit = meta["git_commit"]

    def sink(row):
        writer.add({**row, "run_id": run_id, "started_at": started, "git_commit": commit, "worker": "sweep",
                    "finished_at": results.now()})

    outcome = execute(types, settings, sink, log)
    # every planned cell has a row (the parent writes one for whatever a dead worker left): expect them all
    meta.update(finished_at=results.now(), exit_status=0, expected_cell_ids=sorted(set(expected) | set(outcome.cell_ids)))
    meta["expected_cells"] = len(meta["expected_cell_ids"])
    results.write_run_meta(run_dir, meta)
    return run_dir, outcome


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="prefix-compat sweep", description=__doc__.splitlines()[0])
    ap.add_argument("--types", help="comma-separated model types (default: every causal-LM type of this transformers)")
    ap.add_argument("--adapters", default=",".join(SWEEP_ADAPTERS))
    ap.add_argument("--checks", default=None, help="comma-separated checks (default: all of them)")
    ap.add_argument("--steps", type=int, default=SweepSettings.steps, help="train-check steps (default 20)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2, help="worker processes side by side")
    ap.add_argument("--per-worker", type=int, default=SweepSettings.per_worker,
                    help="model types per worker process before a fresh one")
    ap.add_argument("--probe-timeout", type=float, default=SweepSettings.probe_timeout, metavar="SECONDS")
    ap.add_argument("--cell-timeout", type=float, default=SweepSettings.cell_timeout, metavar="SECONDS")
    ap.add_argument("--results-dir", default="results")
    ap.add_argument("--run-id", default=None)
    ap.add_argument("-o", "--output", help="also write the sweep table (Markdown) here, e.g. docs/SWEEP.md")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    args = ap.parse_args(argv)
    from harness.matrix.cells import split, unknown_names

    try:
        types = select_types(args.types)
        adapters, checks = split(args.adapters) or list(SWEEP_ADAPTERS), split(args.checks) or list(names.CHECKS)
        for value, allowed, flag in ((adapters, names.ADAPTERS, "--adapters"), (checks, names.CHECKS, "--checks")):
            problem = unknown_names(value, allowed, flag)
            if problem:
                raise ValueError(problem)
        for flag, value in (("--steps", args.steps), ("--jobs", args.jobs), ("--per-worker", args.per_worker),
                            ("--probe-timeout", args.probe_timeout), ("--cell-timeout", args.cell_timeout)):
            if value <= 0:
                raise ValueError(f"{flag} {value}: give a positive number")
        if args.run_id is not None:
            results.check_run_id(args.run_id)
    except ValueError as e:
        print(f"prefix-compat sweep: error: {e}", file=sys.stderr)
        return 4
    settings = SweepSettings(tuple(adapters), tuple(checks), args.steps, args.seed, probe_timeout=args.probe_timeout,
                             cell_timeout=args.cell_timeout, jobs=args.jobs, per_worker=args.per_worker)
    log = None if args.quiet else (lambda text: print(text, file=sys.stderr, flush=True))
    try:
        run_dir, _ = run_sweep(types, settings, Path(args.results_dir), args.run_id, log)
    except (ValueError, OSError) as e:
        print(f"prefix-compat sweep: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    from harness.reporting.sweeps import sweep_table, type_verdicts

    counts = {}
    for verdict, _ in type_verdicts(results.read_run(run_dir)).values():
        counts[verdict] = counts.get(verdict, 0) + 1
    print(f"sweep {run_dir.name}: {len(types)} model types: "
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + f"; rows in {run_dir}")
    if args.output:
        Path(args.output).write_text(sweep_table(run_dir), encoding="utf-8")
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
