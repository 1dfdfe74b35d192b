"""The verdict of one cell, decided in one place for the pytest plugin and the sweep.

From what the check measured and what the spec declares, never from report text:
``pass`` / ``fail`` (the bar cleared / missed), ``inconclusive`` (the control could not show the check
can fail), ``n/a`` (the model rules out what the check exercises, e.g. it cannot checkpoint at all), ``xfail`` (a failure the spec declares: a measured failure, or an error raised while the
adapter ran the model, matching ``raises:`` when given), ``xpass`` (declared, but passed), ``error``
(anything else raised; an environment error is never covered by a declaration).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import checks
from .bench import Measurement
from .oracle import OracleError

# Errors that a declared failure never covers: the environment, the machine or the bare model (the oracle)
# failed, not the adapter. A CUDA out-of-memory error is a RuntimeError subclass, so it is named here.
ENVIRONMENT_ERRORS = (ImportError, MemoryError, OSError, OracleError, torch.cuda.OutOfMemoryError)


@dataclass
class Verdict:
    status: str  # pass | fail | inconclusive | n/a | xfail | xpass | error
    message: str
    measurement: Measurement | None = None
    error: Exception | None = None  # what the check raised (status error, or xfail on a declared error)
    expected: object | None = None  # the spec's ExpectedFailure that applies to the cell, if any


def first_line(text) -> str:
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()[:500]
    return ""


def settle(cell, bench, versions: dict) -> Verdict:
    """Run ``cell.check`` on ``bench`` and decide. Only Exceptions are caught: a time limit or an
    interrupt (BaseException) goes to the caller."""
    expected = cell.expected_failure(versions)
    try:
        m = checks.run(cell.check, bench)
    except ENVIRONMENT_ERRORS as e:
        return Verdict("error", f"{type(e).__name__}: {first_line(e)}", error=e, expected=expected)
    except Exception as e:  # noqa: BLE001 - raised while the adapter ran the model
        text = f"{type(e).__name__}: {e}"
        if expected is not None and expected.covers_message(text):
            return Verdict("xfail", f"{type(e).__name__}: {first_line(e)}", error=e, expected=expected)
        return Verdict("error", f"{type(e).__name__}: {first_line(e)}", error=e, expected=expected)
    if m.inconclusive:
        return Verdict("inconclusive", m.message, m, expected=expected)
    if m.not_applicable:
        return Verdict("n/a", m.message, m, expected=expected)
    if m.passed:
        return Verdict("xpass" if expected is not None else "pass", m.message, m, expected=expected)
    if expected is not None and expected.covers_message(m.message):
        return Verdict("xfail", m.message, m, expected=expected)
    return Verdict("fail", m.message, m, expected=expected)
