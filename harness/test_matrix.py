"""The compatibility matrix: one test per spec row x adapter x check.

Run it with ``pytest -n auto harness/`` (options: ``--models``, ``--adapters``, ``--checks``,
``--device``, ``--dtype``, ``--steps``, ``--seed``, ``--cell-timeout``, ``--results-dir``; see
``pytest harness/ --help``). Each test measures; its row (with the metric and the bar) lands in
results/runs/<run_id>/. The verdict is settled by the plugin (harness/matrix/plugin.py).
"""
import pytest


def test_cell(cell, bench, run_check):
    run_check(cell, bench)


def test_spec_file(spec_problem):
    """A spec file that did not load: its error row names the file, the field and the fix."""
    pytest.fail(str(spec_problem.error), pytrace=False)
