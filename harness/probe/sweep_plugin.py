"""``pytest -n auto harness/ --sweep [--sweep-types llama,mamba]``: the sweep inside the matrix.

The controller probes every causal-LM model type (or the ``--sweep-types`` subset) in worker processes
(harness/probe/sweep.py, each type under ``--probe-timeout``), writes one ``probe`` row per type into
the run, and hands the ok drafts to the matrix through its ``pytest_prefix_compat_specs`` hook
(harness/matrix/hookspecs.py): the matrix then runs them instead of model_specs/, cells and verdicts
exactly as for a spec file. xdist workers get the drafts from the controller (no worker probes again).
The matrix never imports this module; harness/conftest.py registers it next to the matrix plugin.
"""
from __future__ import annotations

import pytest

SWEEP_KEY = "pc_sweep"  # workerinput key: {model type: {"status", "reason", "yaml"}}


def pytest_addoption(parser):
    g = parser.getgroup("prefix-compat")
    g.addoption("--sweep", action="store_true",
                help="run the matrix over drafted specs of every causal-LM model type (the probe's), not model_specs/")
    g.addoption("--sweep-types", default=None, help="comma-separated model types for --sweep (implies --sweep)")
    g.addoption("--sweep-jobs", type=int, default=2, help="probe worker processes (--sweep)")
    g.addoption("--probe-timeout", type=float, default=120.0, metavar="SECONDS", help="time limit per probe (--sweep)")


def _active(config) -> bool:
    return bool(config.getoption("sweep", False) or config.getoption("sweep_types", None))


def _probes(config) -> dict:
    """{model type: probe outcome}: probed here in the controller (once), received in an xdist worker."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and SWEEP_KEY in workerinput:
        return workerinput[SWEEP_KEY]
    if getattr(config, "_pc_sweep", None) is None:
        from .sweep import SweepSettings, execute, select_types

        try:
            types = select_types(config.getoption("sweep_types"))
        except ValueError as e:
            raise pytest.UsageError(f"--sweep-types: {e}") from None
        if config.option.sweep_jobs < 1 or config.option.probe_timeout <= 0:
            raise pytest.UsageError("--sweep-jobs and --probe-timeout must be positive")
        settings = SweepSettings(checks=(), steps=config.option.steps, seed=config.option.seed,
                                 dtype=config.option.dtype, probe_timeout=config.option.probe_timeout,
                                 jobs=config.option.sweep_jobs)
        rows: list[dict] = []
        outcome = execute(types, settings, rows.append)
        config._pc_sweep, config._pc_sweep_rows = outcome.probes, rows
    return config._pc_sweep


@pytest.hookimpl
def pytest_prefix_compat_specs(config):
    if not _active(config):
        return None
    from .sweep import load_drafted

    return [load_drafted(t, p["yaml"]) for t, p in sorted(_probes(config).items()) if p["status"] == "ok" and p["yaml"]]


def pytest_configure(config):
    if _active(config) and config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistHooks(), "prefix-compat-sweep-xdist")


class _XdistHooks:
    def pytest_configure_node(self, node):
        node.workerinput[SWEEP_KEY] = _probes(node.config)


def pytest_sessionstart(session):
    """The controller writes the probe rows (one per model type) into the matrix's run."""
    config = session.config
    rows = getattr(config, "_pc_sweep_rows", None)
    if not rows or getattr(config, "workerinput", None) is not None or not hasattr(config, "_pc_run_dir"):
        return
    from harness.reporting import results

    writer, commit = results.PartWriter(config._pc_run_dir, "probe"), results.git_commit()
    for row in rows:
        writer.add({**row, "run_id": config._pc_run_id, "started_at": config._pc_started, "worker": "probe",
                    "git_commit": commit, "finished_at": results.now()})
