"""The compatibility matrix: one test per spec row x adapter x check.

Run it with ``pytest -n auto harness/`` (options: ``--models``, ``--adapters``, ``--checks``,
``--device``, ``--dtype``, ``--steps``, ``--results-dir``; see ``pytest harness/ --help``).
Each test measures; its row (with the metric and the bar) lands in results/runs/<run_id>/.
"""


def test_cell(cell, bench, run_check):
    measurement = run_check(cell, bench)
    assert measurement.passed, measurement.message
