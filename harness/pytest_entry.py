"""The package's ``pytest11`` entry point: run the matrix from any project,
``pytest -p harness --specs my_specs/ test_matrix.py`` (the test file holds one line:
``from harness.test_matrix import test_cell, test_spec_file``).

pytest loads every installed entry point in every run, so this shim is inert unless the run asks for
the matrix: it adds no option (a project's own ``--device`` or ``--seed`` cannot clash), imports
neither torch nor the matrix, and writes no run. The run asks with ``-p harness`` (on the command
line or in addopts) or a ``--specs`` folder; the shim then registers ``harness.matrix.plugin`` under
its module name, the name ``-p harness.matrix.plugin`` and harness/conftest.py's ``pytest_plugins``
use too, so pytest sees one plugin however many of these name it.
"""
from __future__ import annotations

PLUGIN = "harness.matrix.plugin"
ENTRY_POINT = "harness"  # the entry point's name in pyproject.toml: `-p harness`
TRIGGER_OPTIONS = ("--specs",)


def wants_matrix(args, plugins) -> bool:
    """Whether a run's arguments (addopts included) ask for the matrix."""
    if ENTRY_POINT in [str(p).strip() for p in plugins or ()]:
        return True
    return any(a == opt or a.startswith(opt + "=") for a in map(str, args) for opt in TRIGGER_OPTIONS)


def pytest_load_initial_conftests(early_config, parser, args):
    # Runs before conftest files load (pytest's own loader is trylast) and before the full parse,
    # so the plugin's options are in place for `--specs` and its hooks see pytest_configure.
    manager = early_config.pluginmanager
    if manager.has_plugin(PLUGIN) or manager.is_blocked(PLUGIN):
        return
    if wants_matrix(args, getattr(early_config.known_args_namespace, "plugins", None)):
        manager.import_plugin(PLUGIN)
