"""Checks: one module per check name, each ``run(bench) -> Measurement``.

Every check is a measurement with a threshold recorded in its result row; "it ran without an
exception" is never a pass.
"""
from __future__ import annotations

import importlib


def run(check: str, bench):
    return importlib.import_module(f"{__name__}.{check}").run(bench)
