"""The pytest plugin behind ``pytest -n auto harness/``: options, the cell parametrisation, one
model per worker, the verdict of every cell, and one Parquet row per test (see results.py).

Verdicts are decided here, in one place (``_verdict``), from what the check measured and what the
spec declares, never from pytest's report text:

- ``pass`` / ``fail``: the measurement cleared / missed its bar;
- ``inconclusive``: the check's control could not show it can fail on this model (never a pass);
- ``xfail``: a failure the spec declares, and only a measured failure or an error raised while the
  adapter ran the model (matching the spec's ``raises:`` text when given); ``xpass``: it passed;
- ``error``: anything else raised: building or loading the model, a missing package, refused code;
- ``timeout``: the cell ran past ``--cell-timeout``; ``skip``: not runnable here (the reason is
  printed at the end of the run, grouped).
"""
from __future__ import annotations

import functools
import os
import signal
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from harness.core.spec import SpecError, load_specs_report
from harness.reporting import results

from . import axes, checkpoints, devices, shards
from .bench import Bench, Settings
from .cells import (
    TRUST_ENV,
    Cell,
    SelectionError,
    build_cells,
    not_applicable_cells,
    remote_skip_reason,
    select_specs,
    split,
)
from .verdict import ENVIRONMENT_ERRORS, settle

ROW_KEY = pytest.StashKey[dict]()
MEASUREMENT_KEY = pytest.StashKey[object]()
VERDICT_KEY = pytest.StashKey[tuple]()
P_KEY = pytest.StashKey[int]()
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}
TIMEOUT_MARK = "from pytest-timeout"  # pytest-timeout's failure text


@dataclass(frozen=True)
class SpecProblem:
    """A spec file that did not load: it gets an error row of its own, the others run."""

    error: SpecError

    @property
    def name(self) -> str:
        return Path(self.error.path).stem

    @property
    def id(self) -> str:
        return f"spec-{Path(self.error.path).name}"


def pytest_addhooks(pluginmanager):
    from . import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser):
    g = parser.getgroup("prefix-compat", "prefix tuning compatibility matrix")
    g.addoption("--models", default=None, help="comma-separated spec names (default: all in --specs)")
    g.addoption("--adapters", default=None, help="comma-separated adapters (harness, naive, peft)")
    g.addoption("--checks", default=None, help="comma-separated checks (default: all)")
    g.addoption("--specs", default=None, help="folder of spec files (default: model_specs/)")
    g.addoption("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto takes CUDA when present")
    g.addoption("--dtype", default="auto", help="comma-separated dtypes; auto: float32,bfloat16 (+float16 on CUDA)")
    g.addoption("--attn", default=axes.DEFAULT_ATTN,
                help="comma-separated attention implementations for transformers' own models (eager, sdpa, flash_attention_2)")
    g.addoption("--no-mlp-variant", action="store_true", help="leave out the generated mlp row (P-Tuning v2 MLP encoder)")
    g.addoption("--steps", type=int, default=60, help="training steps of the train check")
    g.addoption("--seed", type=int, default=0, help="seed of the checks' inputs (verdicts must not depend on it)")
    g.addoption("--cell-timeout", type=float, default=600.0, metavar="SECONDS",
                help="a cell running longer becomes a 'timeout' row and the matrix goes on")
    g.addoption("--code-source", default="default", choices=("default", "remote", "all"),
                help="default: transformers or our reference models; remote: real hub code (opt-in)")
    g.addoption("--trust-remote-code", action="store_true",
                help=f"allow running hub remote code (same as {TRUST_ENV}=1)")
    g.addoption("--code-dir", action="append", default=[], metavar="SPEC=PATH",
                help="a local folder with a spec's real remote code (same as PREFIX_COMPAT_CODE_DIR_<SPEC>)")
    g.addoption("--results-dir", default="results", help="where runs/<run_id>/ goes")
    g.addoption("--run-id", default=None, help="name of this run (default: timestamp + random)")
    g.addoption("--plots", action="store_true",
                help="draw heatmap.png and loss curves next to the run at the end (or later: prefix-compat plots RUN)")
    checkpoints.add_options(g)
    shards.add_options(g)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    """``-n auto`` on a CUDA run: one worker per GPU (devices.py); otherwise xdist's CPU count."""
    return devices.auto_workers(config.option.device) if hasattr(config.option, "models") else None


# ----------------------------------------------------------------------------- run set-up
@functools.lru_cache(maxsize=None)
def _cached_versions() -> tuple:
    return tuple(results.library_versions().items())


def _versions() -> dict[str, str]:
    return dict(_cached_versions())


def _device(config) -> str:
    wanted = config.option.device
    if wanted == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return wanted


def _check_options(config) -> None:
    """Options that cannot work are usage errors (exit 4, one line), not tracebacks mid-run."""
    opt = config.option
    if opt.steps < 1:
        raise pytest.UsageError(f"--steps {opt.steps}: the train check needs at least 1 step")
    if opt.cell_timeout <= 0:
        raise pytest.UsageError(f"--cell-timeout {opt.cell_timeout}: give a positive number of seconds")
    if opt.device == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError("--device cuda: this torch sees no CUDA device (use --device cpu or auto)")
    try:
        axes.parse_dtypes(opt.dtype, _device(config), bool(opt.checkpoint or opt.checkpoints)), axes.parse_attn(opt.attn)
    except ValueError as e:
        raise pytest.UsageError(str(e)) from None
    if opt.specs and not Path(opt.specs).is_dir():
        raise pytest.UsageError(f"--specs {opt.specs}: no such folder")
    if opt.run_id is not None:
        try:
            results.check_run_id(opt.run_id)
        except ValueError as e:
            raise pytest.UsageError(f"--run-id: {e}") from None


def _load_matrix(config) -> None:
    """Specs and cells of this run, once per process. A bad spec file removes only its own rows."""
    opt = config.option
    contributed = config.hook.pytest_prefix_compat_specs(config=config)  # e.g. --sweep: drafted specs
    specs, errors = (list(contributed), []) if contributed is not None else load_specs_report(
        [opt.specs] if opt.specs else None)
    bad_names = [Path(e.path).stem for e in errors]
    try:
        chosen = select_specs(specs, opt.models, also_known=bad_names)
        cells = axes.expand(build_cells(chosen, opt.adapters, opt.checks, opt.code_source),
                            axes.parse_dtypes(opt.dtype, _device(config), bool(opt.checkpoint or opt.checkpoints)), axes.parse_attn(opt.attn),
                            mlp=not opt.no_mlp_variant) + not_applicable_cells(chosen)
        cells = checkpoints.select(opt, chosen, cells)  # real checkpoints instead of tiny models, when asked
    except SelectionError as e:
        raise pytest.UsageError(str(e)) from None
    named = set(split(opt.models) or bad_names)  # a bad file shows when all specs run or it is named
    problems = [SpecProblem(e) for e in errors if Path(e.path).stem in named]
    rows = {c.id: c.row for c in cells}
    try:  # --shard K/N: this session's share of the whole run's cells
        plan = shards.plan(opt, list(rows) + [p.id for p in problems], rows.get, Path(str(config.rootpath)))
    except ValueError as e:
        raise pytest.UsageError(str(e)) from None
    mine = set(plan.ids)
    config._pc_plan = plan
    config._pc_cells = [c for c in cells if c.id in mine]
    config._pc_spec_problems = [p for p in problems if p.id in mine]


def pytest_configure(config):
    if not hasattr(config.option, "models"):
        return
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and workerinput.get("pc_gpu_count"):  # before anything here touches CUDA
        config._pc_gpu = devices.pin_worker(workerinput["workerid"], workerinput["pc_gpu_count"])
    # Nothing is ever fetched: set before transformers / huggingface_hub read it at import.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    config.addinivalue_line("markers", "timeout: per-cell time limit (pytest-timeout)")
    _check_options(config)
    _remote_options_to_environment(config)
    _load_matrix(config)
    if workerinput is not None:  # an xdist worker: the controller named the run
        config._pc_run_id = workerinput["pc_run_id"]
        config._pc_started = workerinput["pc_started"]
        config._pc_worker = workerinput["workerid"]
        # Tiny models: N workers x all-core thread pools oversubscribe the CPU many times over.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(workerinput.get("workercount", 1))))
    else:
        config._pc_run_id = config.option.run_id or results.new_run_id()
        config._pc_started = results.now()
        config._pc_worker = "main"
        config._pc_gpu_count = devices.gpu_count() if devices.wants_cuda(config.option.device) else 0
    config._pc_run_dir = results.run_dir_for(Path(config.option.results_dir), config._pc_run_id)
    config._pc_writer = None
    config._pc_models = {}
    _OUTCOMES.clear()
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistHooks(), "prefix-compat-xdist")


def _remote_options_to_environment(config) -> None:
    """--trust-remote-code and --code-dir are the command-line spellings of the environment variables
    the remote loader reads (workers inherit the environment)."""
    from harness.core.remote import code_dir_variable

    if config.option.trust_remote_code:
        os.environ[TRUST_ENV] = "1"
    for item in config.option.code_dir:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise pytest.UsageError(f"--code-dir {item!r}: write SPEC=PATH, e.g. --code-dir qwen=/models/Qwen-7B")
        os.environ[code_dir_variable(name)] = path


class _XdistHooks:
    def pytest_configure_node(self, node):
        node.workerinput["pc_run_id"] = node.config._pc_run_id
        node.workerinput["pc_started"] = node.config._pc_started
        node.workerinput["pc_gpu_count"] = node.config._pc_gpu_count

    def pytest_handlecrashitem(self, crashitem, report, sched):
        """A worker died mid-test: the controller writes that cell's row so none is lost."""
        config = sched.config
        cell = {c.id: c for c in config._pc_cells}.get(crashitem.split("[", 1)[-1].rstrip("]"))
        if cell is None:
            return
        row = _base_row(config, cell, crashitem)
        died = next((ln for ln in report.longreprtext.splitlines() if "crashed" in ln), "the worker crashed")
        row.update(status="error", message=f"the worker process died while running this cell ({died.strip()})",
                   finished_at=results.now(), worker="controller")
        writer = getattr(config, "_pc_crash_writer", None) or results.PartWriter(config._pc_run_dir, "controller")
        config._pc_crash_writer = writer
        _add_row(writer, row)
        _OUTCOMES.append(("error", cell.id, cell.spec.name, row["message"]))


def _is_controller(config) -> bool:
    return getattr(config, "workerinput", None) is None


def _settings(config) -> dict:
    """What changes a verdict: a run id re-used with other settings would mix incomparable rows."""
    opt = config.option
    return {"steps": opt.steps, "dtype": opt.dtype, "device": _device(config), "seed": opt.seed,
            "code_source": opt.code_source, "num_virtual_tokens_override": None,
            **({"shard_count": config._pc_plan.shard.count} if config._pc_plan.shard else {})}


def pytest_sessionstart(session):
    config = session.config
    if not hasattr(config, "_pc_run_id") or not _is_controller(config):
        return
    ids = config._pc_plan.all_ids  # every shard's cells: the run is complete only when all are in
    earlier, damaged = results.read_run_meta_checked(config._pc_run_dir)
    if damaged:
        raise pytest.UsageError(f"--run-id {config._pc_run_id}: {damaged}; use another --run-id")
    if earlier:
        conflict = results.settings_conflict(earlier, _settings(config))
        if conflict:
            raise pytest.UsageError(conflict)
    conflict = config._pc_plan.shard and shards.conflict(config._pc_run_dir, config._pc_plan)
    if conflict:
        raise pytest.UsageError(conflict)
    # A reused run id (same settings) adds to what the run covers: its earlier rows stay.
    ids = sorted(set(earlier.get("expected_cell_ids", [])) | set(ids))
    _write_meta(config._pc_run_dir, {
        "run_id": config._pc_run_id, "started_at": config._pc_started, "finished_at": None,
        "expected_cells": len(ids), "expected_cell_ids": ids, **_settings(config), "versions": _versions(),
        "git_commit": results.git_commit(), "models": config.option.models, "adapters": config.option.adapters,
        "checks": config.option.checks, "cell_timeout": config.option.cell_timeout,
    })
    if config._pc_plan.shard:
        shards.start(config._pc_run_dir, config._pc_plan, config._pc_started)


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    if not hasattr(config, "_pc_run_id") or not _is_controller(config):
        return
    meta = results.read_run_meta(config._pc_run_dir)
    if meta:
        meta["finished_at"] = results.now()
        meta["exit_status"] = int(exitstatus)
        _write_meta(config._pc_run_dir, meta)
        if config._pc_plan.shard:
            shards.finish(config._pc_run_dir, config._pc_plan, int(exitstatus))
        if config.option.plots:
            _write_plots(config._pc_run_dir)


def _write_meta(run_dir, meta) -> None:
    try:
        results.write_run_meta(run_dir, meta)
    except results.ResultsWriteError as e:
        pytest.exit(f"prefix-compat: {e}", returncode=3)


def _write_plots(run_dir) -> None:
    """Pictures next to the run when matplotlib is installed; a plotting problem never fails a run."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    from harness.reporting.plots import write_plots

    try:
        write_plots(run_dir)
    except Exception as e:  # noqa: BLE001
        print(f"prefix-compat: could not draw plots for {run_dir}: {e}")


# ----------------------------------------------------------------------------- parametrisation
def pytest_generate_tests(metafunc):
    config = metafunc.config
    if "spec_problem" in metafunc.fixturenames:
        problems = getattr(config, "_pc_spec_problems", [])
        metafunc.parametrize("spec_problem", [pytest.param(p, id=p.id) for p in problems])
        return
    if "cell" not in metafunc.fixturenames:
        return
    method = "signal" if hasattr(signal, "SIGALRM") else "thread"
    params = []
    for cell in config._pc_cells:
        marks = [pytest.mark.timeout(config.option.cell_timeout, method=method)]
        skip = (checkpoints.skip_reason(cell) if cell.checkpoint is not None else remote_skip_reason(cell)) \
            or axes.unsupported_reason(cell, _device(config))
        if skip:
            marks.append(pytest.mark.skip(reason=skip))
        params.append(pytest.param(cell, id=cell.id, marks=marks))
    metafunc.parametrize("cell", params)


def pytest_collection_modifyitems(session, config, items):
    """No spec file failed to load: drop the empty placeholder of test_spec_file (pytest would list
    it as a skip, and every skip in this project means something)."""
    keep = [i for i in items if not (getattr(i, "callspec", None) and "spec_problem" in i.callspec.params
                                     and not isinstance(i.callspec.params["spec_problem"], SpecProblem))]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in keep])
        items[:] = keep


def _check_spec(config, spec) -> None:
    """What `validate` checks, once per spec and worker (a tiny build and one forward, ~0.05 s): a spec that
    loads but disagrees with the cache its model really keeps (kv.heads, kv.layout, head dims, layer count)
    makes each of its cells an error row naming the file, the field, the value measured and the fix, instead of
    whatever shape error the check would meet."""
    from harness.core.spec import check_buildable

    checked = config.__dict__.setdefault("_pc_spec_checked", {})
    if spec.path not in checked:
        try:
            check_buildable(spec)
            checked[spec.path] = None
        except SpecError as e:
            if isinstance(e.__context__, ENVIRONMENT_ERRORS):
                # the machine, not the spec (out of memory, a missing package): this cell's error row says
                # so, and the next cell checks again on a clean device
                raise e.__context__ from None
            checked[spec.path] = e
    if checked[spec.path] is not None:
        raise checked[spec.path]


@pytest.fixture
def bench(request, cell):
    """The cell's workbench. Building the model happens here, in set-up: a failure to build or load
    it is always an ``error`` row, whatever the spec declares."""
    config = request.config
    if cell.spec.not_applicable:  # no prefix to run: the check measures the claim itself
        return None
    device, dtype = _device(config), DTYPES[cell.dtype]
    devices.start_cell(device, getattr(config, "_pc_gpu", None))
    _check_spec(config, cell.spec)
    key = (cell.spec.path, cell.code_source, device, dtype, cell.attn, cell.checkpoint)
    if key not in config._pc_models:  # once per worker: every cell gets a deep copy of it
        too_large = devices.too_large(functools.partial(checkpoints.count_params, cell), dtype, device)
        if too_large:
            pytest.skip(too_large)
        config._pc_models[key] = axes.set_attention(checkpoints.build(cell, device, dtype), cell.attn)
    bench = Bench(cell, config._pc_models[key], Settings(device, dtype, config.option.steps, config.option.seed))
    request.node.stash[P_KEY] = bench.num_virtual_tokens
    return bench


@pytest.fixture
def run_check(request):
    """Run a check and settle the cell's verdict (see the module docstring)."""
    def _run(cell, bench):
        return _verdict(request.node, cell, bench)
    return _run


def _verdict(node, cell: Cell, bench) -> None:
    """The cell's verdict (harness/matrix/verdict.py, shared with the sweep) as a pytest outcome."""
    if cell.spec.not_applicable:
        return _not_applicable(node, cell)
    v = settle(cell, bench, _versions())
    if v.status == "error":
        raise v.error  # pytest shows the traceback; the row says error with its first line
    if v.measurement is not None:
        node.stash[MEASUREMENT_KEY] = v.measurement
    node.stash[VERDICT_KEY] = (v.status, v.message)
    if v.status in ("inconclusive", "n/a"):
        pytest.skip(v.message)
    if v.status == "xfail":
        pytest.xfail(v.expected.reason)
    if v.status == "xpass":
        pytest.fail(f"XPASS(strict): the spec declares this cell fails, but it passed: {v.message}", pytrace=False)
    if v.status == "fail":
        pytest.fail(v.message, pytrace=False)


def _not_applicable(node, cell: Cell) -> None:
    """One ``n/a`` row for a spec declaring no attention KV cache, once the tiny model shows it keeps
    none (a SpecError naming ``not_applicable`` otherwise: an error row)."""
    from harness.core.applicable import measure

    measured = measure(cell.spec)
    node.stash[VERDICT_KEY] = ("n/a", f"{cell.spec.not_applicable} (measured: {measured['summary']})")
    pytest.skip(cell.spec.not_applicable)


# ----------------------------------------------------------------------------- result rows
def _base_row(config, cell: Cell, nodeid: str) -> dict:
    versions = _versions()
    expected = cell.expected_failure(versions)
    return {
        "run_id": config._pc_run_id, "started_at": config._pc_started, "model": cell.row, "spec": cell.spec.name,
        "variant": cell.variant.name, "family": cell.spec.family, "code_source": cell.code_source,
        "adapter": cell.adapter, "check": cell.check, "device": _device(config), "dtype": config.option.dtype,
        "steps": config.option.steps, "seed": config.option.seed,
        "torch_version": versions["torch"], "transformers_version": versions["transformers"],
        "peft_version": versions["peft"], "python_version": versions["python"],
        "git_commit": _git_commit(config), "worker": config._pc_worker,
        "kv_layout": str(cell.spec.kv.layout) if cell.spec.kv else None,  # None: a not_applicable spec
        "concat_dim": cell.spec.kv.concat_dim if cell.spec.kv else None, "nodeid": nodeid,
        "expected_failure": expected.reason if expected else None, **axes.row_fields(cell),
        "shard": str(config._pc_plan.shard) if config._pc_plan.shard else None,
    }


def _problem_row(config, problem: SpecProblem, nodeid: str) -> dict:
    versions = _versions()
    return {
        "run_id": config._pc_run_id, "started_at": config._pc_started, "model": problem.name, "spec": problem.name,
        "variant": "default", "family": None, "code_source": "spec", "adapter": "-", "check": "spec",
        "device": _device(config), "dtype": config.option.dtype, "steps": config.option.steps,
        "seed": config.option.seed, "torch_version": versions["torch"],
        "transformers_version": versions["transformers"], "peft_version": versions["peft"],
        "python_version": versions["python"], "git_commit": _git_commit(config), "worker": config._pc_worker,
        "nodeid": nodeid, "status": "error", "message": str(problem.error),
    }


def _git_commit(config) -> str:
    if not hasattr(config, "_pc_git"):
        config._pc_git = results.git_commit(Path(str(config.rootpath)))
    return config._pc_git


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    params = getattr(item, "callspec", None) and item.callspec.params
    if not params:
        return
    cell, problem = params.get("cell"), params.get("spec_problem")
    if isinstance(problem, SpecProblem):
        if call.when == "teardown":
            row = _problem_row(item.config, problem, item.nodeid)
            row["finished_at"] = results.now()
            _add_row(_writer(item.config), row)
            report.user_properties.append(("pc_outcome", ("error", problem.id, problem.name, str(problem.error))))
        return
    if not isinstance(cell, Cell):
        return
    row = item.stash.get(ROW_KEY, None)
    if row is None:
        row = _base_row(item.config, cell, item.nodeid)
        row["_t0"] = time.time()
        item.stash[ROW_KEY] = row
    if call.when in ("setup", "call") and "status" not in row:
        status, message = _status(item, report, call)
        if status is not None:
            row["status"], row["message"] = status, message
    if call.when == "teardown":
        if report.failed and row.get("status") in (None, "pass"):
            row["status"], row["message"] = "error", f"teardown failed: {_first_line(report.longreprtext)}"
        m = item.stash.get(MEASUREMENT_KEY, None)
        if m is not None:
            row.update(metric=m.metric, threshold=m.threshold, details=m.details)
        row.update(devices.row_columns(row["device"], m.details if m is not None else None, cell.checkpoint))
        devices.clean_device(row["device"])  # after an out-of-memory error the next cell starts clean
        row["num_virtual_tokens"] = item.stash.get(P_KEY, None)
        row["duration_s"] = time.time() - row.pop("_t0")
        row["finished_at"] = results.now()
        row.setdefault("status", "error")
        _add_row(_writer(item.config), row)
        report.user_properties.append(("pc_outcome", (row["status"], cell.id, cell.spec.name, row.get("message") or "")))


def _status(item, report, call) -> tuple[str | None, str]:
    """The verdict of a phase: the one ``_verdict`` settled, else what happened before or around it."""
    settled = item.stash.get(VERDICT_KEY, None)
    if report.when == "call" and settled is not None:
        return settled
    if report.passed:
        return (None, "") if report.when == "setup" else ("error", "the check recorded no verdict")
    text = _failure_text(report, call)
    if TIMEOUT_MARK in text:
        return "timeout", f"ran longer than --cell-timeout {item.config.option.cell_timeout:g} s ({report.when})"
    if report.skipped:
        return "skip", text
    where = "building the model or setting up the cell" if report.when == "setup" else "running the check"
    return "error", f"{text} (while {where})" if report.when == "setup" else text


def _failure_text(report, call) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    if call.excinfo is not None:
        return f"{call.excinfo.typename}: {_first_line(str(call.excinfo.value))}"
    return _first_line(report.longreprtext) if report.longreprtext else ""


def _writer(config) -> results.PartWriter:
    if config._pc_writer is None:
        config._pc_writer = results.PartWriter(config._pc_run_dir, shards.part_tag(config._pc_worker, config._pc_plan))
    return config._pc_writer


def _add_row(writer, row) -> None:
    """A row that cannot be written (a full disk) ends the run with one clear line; every row
    written before stays intact on disk."""
    try:
        writer.add(row)
    except results.ResultsWriteError as e:
        pytest.exit(f"prefix-compat: {e}", returncode=3)


def _first_line(text: str) -> str:
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()[:500]
    return ""


# ----------------------------------------------------------------------------- end-of-run summary
def pytest_runtest_logreport(report):
    for key, value in getattr(report, "user_properties", ()):
        if key == "pc_outcome":
            _OUTCOMES.append(tuple(value))


_OUTCOMES: list[tuple] = []  # the controller's view of every cell (filled from workers' reports)

LOUD = {"error": "errors", "timeout": "time-outs", "inconclusive": "inconclusive (the check could not show it can fail)",
        "skip": "skipped"}


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Nothing that was not measured passes silently: skipped, inconclusive, timed-out and errored
    cells are listed, grouped by reason and spec, with where the rows went."""
    if not hasattr(config, "_pc_run_id") or not _is_controller(config) or not _OUTCOMES:
        return
    tr = terminalreporter
    counts = defaultdict(int)
    groups: dict[str, dict[tuple[str, str], list[str]]] = {s: defaultdict(list) for s in LOUD}
    for status, cell_id, spec, message in _OUTCOMES:
        counts[status] += 1
        if status in groups:
            groups[status][(" ".join(message.split(" (declared")[0].split())[:300], spec)].append(cell_id)
    for status, title in LOUD.items():
        if not groups[status]:
            continue
        tr.write_sep("-", f"prefix-compat: {sum(len(v) for v in groups[status].values())} {title}")
        for (reason, spec), ids in sorted(groups[status].items(), key=lambda kv: (kv[0][1], kv[0][0])):
            tr.write_line(f"{spec}: {len(ids)} cell(s): {reason}")
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    tr.write_line(f"prefix-compat: run {config._pc_run_id}: {summary}; rows in {config._pc_run_dir}")
