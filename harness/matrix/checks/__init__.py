"""Checks: one module per check name, each ``run(bench) -> Measurement``.

Every check is a measurement with a threshold recorded in its result row; "it ran without an
exception" is never a pass. Every check also runs a control first, showing that on the inputs it
uses a wrong adapter (one that drops the prefix, swaps K and V, or reverses its positions) would
miss the bar; when no input tried can show that, the cell is ``inconclusive``, never a pass.
"""
from __future__ import annotations

import importlib

# Fresh inputs (and prefix tokens) are drawn this many times looking for ones on which the
# control distinguishes, before a cell is called inconclusive.
ATTEMPTS = 5


def run(check: str, bench):
    if getattr(bench.variant, "projection_dim", None):  # the generated mlp variant (axes.py): no K/V to plant
        return importlib.import_module(f"{__name__}.projection").run(check, bench)
    return importlib.import_module(f"{__name__}.{check}").run(bench)
