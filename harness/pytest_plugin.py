"""The pytest plugin behind ``pytest -n auto harness/``: options, the cell parametrisation, one
model per worker, and one Parquet row per test (see results.py)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from . import checks, results
from .bench import Bench, Settings
from .matrix import TRUST_ENV, Cell, build_cells, remote_skip_reason, select_specs
from .models import build_model
from .spec import load_specs

ROW_KEY = pytest.StashKey[dict]()
MEASUREMENT_KEY = pytest.StashKey[object]()
P_KEY = pytest.StashKey[int]()
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


def pytest_addoption(parser):
    g = parser.getgroup("prefix-compat", "prefix tuning compatibility matrix")
    g.addoption("--models", default=None, help="comma-separated spec names (default: all in --specs)")
    g.addoption("--adapters", default=None, help="comma-separated adapters (harness, naive, peft)")
    g.addoption("--checks", default=None, help="comma-separated checks (default: all)")
    g.addoption("--specs", default=None, help="folder of spec files (default: model_specs/)")
    g.addoption("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto takes CUDA when present")
    g.addoption("--dtype", default="float32", choices=tuple(DTYPES))
    g.addoption("--steps", type=int, default=60, help="training steps of the train check")
    g.addoption("--code-source", default="default", choices=("default", "remote", "all"),
                help="default: transformers or our reference models; remote: real hub code (opt-in)")
    g.addoption("--trust-remote-code", action="store_true",
                help=f"allow running hub remote code (same as {TRUST_ENV}=1)")
    g.addoption("--code-dir", action="append", default=[], metavar="SPEC=PATH",
                help="a local folder with a spec's real remote code (same as PREFIX_COMPAT_CODE_DIR_<SPEC>)")
    g.addoption("--results-dir", default="results", help="where runs/<run_id>/ goes")
    g.addoption("--run-id", default=None, help="name of this run (default: timestamp + random)")


# ----------------------------------------------------------------------------- run set-up
def _versions() -> dict[str, str]:
    return results.library_versions()


def _cells(config) -> list[Cell]:
    opt = config.option
    specs = select_specs(load_specs([opt.specs] if opt.specs else None), opt.models)
    return build_cells(specs, opt.adapters, opt.checks, opt.code_source)


def _device(config) -> str:
    wanted = config.option.device
    if wanted == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return wanted


def pytest_configure(config):
    if not hasattr(config.option, "models"):
        return
    # Nothing is ever fetched: set before transformers / huggingface_hub read it at import.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _remote_options_to_environment(config)
    workerinput = getattr(config, "workerinput", None)
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
    config._pc_run_dir = results.runs_root(Path(config.option.results_dir)) / config._pc_run_id
    config._pc_writer = None
    config._pc_models = {}
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistHooks(), "prefix-compat-xdist")


def _remote_options_to_environment(config) -> None:
    """--trust-remote-code and --code-dir are the command-line spellings of the environment variables
    the remote loader reads (workers inherit the environment)."""
    from .remote import code_dir_variable

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

    def pytest_handlecrashitem(self, crashitem, report, sched):
        """A worker died mid-test: the controller writes that cell's row so none is lost."""
        config = sched.config
        cell = {c.id: c for c in _cells(config)}.get(crashitem.split("[", 1)[-1].rstrip("]"))
        if cell is None:
            return
        row = _base_row(config, cell, crashitem)
        died = next((ln for ln in report.longreprtext.splitlines() if "crashed" in ln), "the worker crashed")
        row.update(status="error", message=f"the worker process died while running this cell ({died.strip()})",
                   finished_at=results.now(), worker="controller")
        writer = getattr(config, "_pc_crash_writer", None) or results.PartWriter(config._pc_run_dir, "controller")
        config._pc_crash_writer = writer
        writer.add(row)


def _is_controller(config) -> bool:
    return getattr(config, "workerinput", None) is None


def pytest_sessionstart(session):
    config = session.config
    if not hasattr(config, "_pc_run_id") or not _is_controller(config):
        return
    cells = _cells(config)
    versions = _versions()
    # A reused run id adds to what the run covers: its earlier rows stay in its part files.
    earlier = results.read_run_meta(config._pc_run_dir).get("expected_cell_ids", [])
    ids = sorted(set(earlier) | {c.id for c in cells})
    results.write_run_meta(config._pc_run_dir, {
        "run_id": config._pc_run_id, "started_at": config._pc_started, "finished_at": None,
        "expected_cells": len(ids), "expected_cell_ids": ids, "device": _device(config), "dtype": config.option.dtype,
        "steps": config.option.steps, "versions": versions, "git_commit": results.git_commit(),
        "models": config.option.models, "adapters": config.option.adapters, "checks": config.option.checks,
        "code_source": config.option.code_source,
    })


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    if not hasattr(config, "_pc_run_id") or not _is_controller(config):
        return
    meta = results.read_run_meta(config._pc_run_dir)
    if meta:
        meta["finished_at"] = results.now()
        meta["exit_status"] = int(exitstatus)
        results.write_run_meta(config._pc_run_dir, meta)
        _write_plots(config._pc_run_dir)


def _write_plots(run_dir) -> None:
    """Pictures next to the run when matplotlib is installed; a plotting problem never fails a run."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    from .plots import write_plots

    try:
        write_plots(run_dir)
    except Exception as e:  # noqa: BLE001
        print(f"prefix-compat: could not draw plots for {run_dir}: {e}")


# ----------------------------------------------------------------------------- parametrisation
def pytest_generate_tests(metafunc):
    if "cell" not in metafunc.fixturenames:
        return
    config = metafunc.config
    versions = _versions()
    params = []
    for cell in _cells(config):
        marks = []
        skip = remote_skip_reason(cell)
        if skip:
            marks.append(pytest.mark.skip(reason=skip))
        expected = cell.expected_failure(versions)
        if expected is not None:
            marks.append(pytest.mark.xfail(strict=True, reason=expected.reason))
        params.append(pytest.param(cell, id=cell.id, marks=marks))
    metafunc.parametrize("cell", params)


@pytest.fixture
def bench(request, cell):
    config = request.config
    device, dtype = _device(config), DTYPES[config.option.dtype]
    key = (cell.spec.path, cell.code_source, device, dtype)
    if key not in config._pc_models:  # once per worker: every cell gets a deep copy of it
        config._pc_models[key] = build_model(cell.spec, cell.code_source, device, dtype)
    bench = Bench(cell, config._pc_models[key], Settings(device, dtype, config.option.steps))
    request.node.stash[P_KEY] = bench.num_virtual_tokens
    return bench


@pytest.fixture
def run_check(request):
    """Run a check and keep its measurement for the result row."""
    def _run(cell, bench):
        measurement = checks.run(cell.check, bench)
        request.node.stash[MEASUREMENT_KEY] = measurement
        return measurement
    return _run


# ----------------------------------------------------------------------------- result rows
def _base_row(config, cell: Cell, nodeid: str) -> dict:
    versions = _versions()
    return {
        "run_id": config._pc_run_id, "started_at": config._pc_started, "model": cell.row, "spec": cell.spec.name,
        "variant": cell.variant.name, "family": cell.spec.family, "code_source": cell.code_source,
        "adapter": cell.adapter, "check": cell.check, "device": _device(config), "dtype": config.option.dtype,
        "torch_version": versions["torch"], "transformers_version": versions["transformers"],
        "peft_version": versions["peft"], "python_version": versions["python"],
        "git_commit": _git_commit(config), "worker": config._pc_worker, "kv_layout": str(cell.spec.kv.layout),
        "concat_dim": cell.spec.kv.concat_dim, "nodeid": nodeid,
        "expected_failure": (cell.expected_failure(versions).reason if cell.expected_failure(versions) else None),
    }


def _git_commit(config) -> str:
    if not hasattr(config, "_pc_git"):
        config._pc_git = results.git_commit(Path(str(config.rootpath)))
    return config._pc_git


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    cell = getattr(item, "callspec", None) and item.callspec.params.get("cell")
    if not isinstance(cell, Cell):
        return
    row = item.stash.get(ROW_KEY, None)
    if row is None:
        row = _base_row(item.config, cell, item.nodeid)
        row["_t0"] = time.time()
        item.stash[ROW_KEY] = row
    if call.when in ("setup", "call") and "status" not in row:
        status = _status(report, call, item.stash.get(MEASUREMENT_KEY, None))
        if status is not None:
            row["status"] = status
            row["message"] = _message(item, report, call)
    if call.when == "teardown":
        if report.failed and row.get("status") in (None, "pass"):
            row["status"], row["message"] = "error", f"teardown failed: {_first_line(report.longreprtext)}"
        m = item.stash.get(MEASUREMENT_KEY, None)
        if m is not None:
            row.update(metric=m.metric, threshold=m.threshold, details=m.details)
        row["num_virtual_tokens"] = item.stash.get(P_KEY, None)
        row["duration_s"] = time.time() - row.pop("_t0")
        row["finished_at"] = results.now()
        row.setdefault("status", "error")
        _writer(item.config).add(row)


def _writer(config) -> results.PartWriter:
    if config._pc_writer is None:
        config._pc_writer = results.PartWriter(config._pc_run_dir, config._pc_worker)
    return config._pc_writer


def _status(report, call, measurement=None) -> str | None:
    xfailed = hasattr(report, "wasxfail")
    if report.when == "setup":
        if report.skipped:  # a skip mark, or an expected failure that already failed in set-up
            return "xfail" if xfailed else "skip"
        if report.failed:
            return "error"
        return None
    if xfailed:
        return "xfail" if report.skipped else "xpass"
    if report.failed and "XPASS(strict)" in str(report.longrepr):
        return "xpass"
    if report.passed:
        return "pass"
    if report.skipped:
        return "skip"
    # "fail" is a measurement that missed its bar; anything raised on the way (an AssertionError
    # inside model code included) is an "error".
    return "fail" if measurement is not None and not measurement.passed else "error"


def _message(item, report, call) -> str:
    m = item.stash.get(MEASUREMENT_KEY, None)
    if m is not None:
        return m.message
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2])
    if call.excinfo is not None:
        return f"{call.excinfo.typename}: {_first_line(str(call.excinfo.value))}"
    return _first_line(report.longreprtext) if report.longreprtext else ""


def _first_line(text: str) -> str:
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()[:500]
    return ""
