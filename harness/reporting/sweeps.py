"""Sweep runs (``prefix-compat sweep``, or ``pytest harness/ --sweep``): one verdict per model type, the
sweep table for docs/SWEEP.md, and what changed per model type between two sweeps.

A sweep run holds a ``probe`` row per model type (status ``pass`` = probe ok, ``n/a``, ``error`` /
``timeout`` = probe-failed; ``details.probe`` keeps the probe's own word) and, for ok types, the check
rows of each adapter. A type's verdict: ``n/a`` or ``probe-failed`` from its probe; otherwise from the
``harness`` adapter's checks: ``fail`` when one missed its bar, ``pass`` when every check run passed,
else ``error`` (raised or timed out) or ``inconclusive``. Measured verdicts: pass, fail and n/a.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from harness.core import names

from .report import checked_rows, run_summary

PROBE_CHECK = "probe"
MEASURED = ("pass", "fail", "n/a")
VERDICTS = ("pass", "fail", "n/a", "error", "inconclusive", "probe-failed")
SYMBOL = {"pass": "✓", "fail": "✗", "error": "E", "timeout": "T", "inconclusive": "?", "xfail": "x", "xpass": "!",
          "skip": "s", "n/a": "–"}
NOT_RUN = "·"
SHORT = {"accepts": "acc", "equivalence": "eq", "gradients": "grad", "train": "train", "generate": "gen",
         "save_load": "save", "checkpointing": "ckpt", "hf_generate": "hf_gen"}


def is_sweep(df: pd.DataFrame) -> bool:
    return bool(len(df)) and bool((df["check"] == PROBE_CHECK).any())


def _probe_status(row: dict) -> str:
    try:
        probe = json.loads(row.get("details") or "{}").get("probe")
    except (TypeError, ValueError):
        probe = None
    return probe or {"pass": "ok", "n/a": "n/a"}.get(row["status"], "probe-failed")


def _strip(message, status: str) -> str:
    text = " ".join(str(message or "").split())
    return text[len(status) + 2:] if text.startswith(f"{status}: ") else text


def adapter_verdict(statuses: list[str]) -> str | None:
    """One adapter's verdict from its check statuses (None when none ran). A check the model rules out
    (``n/a``, e.g. no gradient checkpointing at all) does not count against it."""
    statuses = [s for s in statuses if s != "n/a"] or (["n/a"] if statuses else [])
    if not statuses:
        return None
    if statuses == ["n/a"]:
        return "n/a"
    if any(s in ("fail", "xfail") for s in statuses):
        return "fail"
    if all(s in ("pass", "xpass") for s in statuses):
        return "pass"
    if any(s in ("error", "timeout") for s in statuses):
        return "error"
    return "inconclusive"


def type_table(df: pd.DataFrame) -> dict[str, dict]:
    """model (spec name) -> {"type", "probe", "verdict", "reason", "cells": {(adapter, check): status},
    "adapters": {adapter: verdict}}, for every model with a probe row."""
    out = {}
    records = df.to_dict("records")
    for r in records:
        if r["check"] != PROBE_CHECK:
            continue
        probe = _probe_status(r)
        out[r["model"]] = {"type": r.get("family") or r["model"], "probe": probe,
                           "reason": _strip(r.get("message"), probe) if probe != "ok" else "",
                           "cells": {}, "messages": {}, "adapters": {}, "verdict": probe}
    for r in records:
        t = out.get(r["model"])
        if t is None or r["check"] == PROBE_CHECK:
            continue
        t["cells"][(r["adapter"], r["check"])] = r["status"]
        t["messages"][(r["adapter"], r["check"])] = " ".join(str(r.get("message") or "").split())
    for t in out.values():
        for adapter in dict.fromkeys(a for a, _ in t["cells"]):
            t["adapters"][adapter] = adapter_verdict([s for (a, _), s in t["cells"].items() if a == adapter])
        if t["probe"] != "ok":
            continue
        first = "harness" if "harness" in t["adapters"] else next(iter(t["adapters"]), None)
        t["verdict"] = t["adapters"].get(first) or "error"
        if first is None:
            t["reason"] = "probe ok, but no check row (the worker died before the checks)"
        elif t["verdict"] != "pass":
            wanted = {"fail": ("fail", "xfail"), "error": ("error", "timeout")}.get(t["verdict"], ("inconclusive",))
            key = next((k for k, s in t["cells"].items() if k[0] == first and s in wanted), None)
            if key is not None:
                t["reason"] = f"{first} {key[1]}: {t['messages'][key]}"
    return out


def type_verdicts(df: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """model type -> (verdict, reason)."""
    return {t["type"]: (t["verdict"], t["reason"]) for t in type_table(df).values()}


def counts(table: dict) -> dict[str, int]:
    c = {v: 0 for v in VERDICTS}
    for t in table.values():
        c[t["verdict"]] = c.get(t["verdict"], 0) + 1
    return c


def sweep_table(run_dir: Path) -> str:
    """docs/SWEEP.md: counts, then one line per model type with a symbol per adapter x check."""
    df = checked_rows(run_dir)
    if not is_sweep(df):
        raise ValueError(f"run {run_dir} is not a sweep (it has no probe rows): run `prefix-compat sweep` first")
    s = run_summary(run_dir, df)
    table = type_table(df)
    c = counts(table)
    total = len(table)
    measured = sum(c[v] for v in MEASURED)
    probes = {p: sum(1 for t in table.values() if t["probe"] == p) for p in ("ok", "n/a", "probe-failed")}
    cols = [(a, ch) for a in names.ADAPTERS for ch in names.CHECKS
            if any((a, ch) in t["cells"] for t in table.values())]
    pct = (lambda n: f"{100 * n / max(total, 1):.1f} %")
    lines = [
        "# Sweep: prefix tuning over every causal-LM model type", "",
        f"_run `{s['run_id']}` ({s['date']}): transformers {s['transformers']}, torch {s['torch']}, peft {s['peft']}, "
        f"device {s['device']}, dtype {s['dtype']}, commit `{s['commit']}`; "
        + ("complete" if s["complete"] else f"PARTIAL ({s['rows']} of {s['expected'] or '?'} rows)") + "_", "",
        "Written by `prefix-compat report RUN --sweep -o docs/SWEEP.md` (or `prefix-compat sweep ... -o`). Per model "
        "type: the probe (`ok`: a draft spec whose conventions reproduce the full-context logits; `n/a`: no attention "
        "KV cache, or a hybrid whose attention layers alone cannot be filled; `probe-failed`: what blocked it is in "
        "the note), then, for an ok draft, the checks with the `harness` and `peft` adapters. The verdict is the "
        "`harness` adapter's: `fail` if a check missed its bar, `pass` if every check passed (a check the model "
        "rules out, `n/a`, e.g. no gradient checkpointing at all, aside), else `error` or "
        "`inconclusive`. Drafts declare no expected failures, so known PEFT failures show as ✗. Each type is "
        "measured on its config class's defaults, shrunk: where released checkpoints configure other layer kinds "
        "than the defaults (LFM2: `Lfm2Config()` has only attention layers, its checkpoints mix in convolution "
        "layers, which make it a hybrid, measured), probe with the checkpoint's own config: `prefix-compat probe "
        "TYPE --config config.json`.", "",
        f"**{measured} of {total} model types have a measured verdict** (pass, fail or n/a); probe-failed: "
        f"{probes['probe-failed']} ({pct(probes['probe-failed'])}).", "",
        "| verdict | model types | share |", "|---|---:|---:|",
    ]
    lines += [f"| {v} | {c[v]} | {pct(c[v])} |" for v in VERDICTS]
    lines += [f"| total | {total} | |", "", "| probe | model types |", "|---|---:|"]
    lines += [f"| {p} | {n} |" for p, n in probes.items()]
    adapters_run = list(dict.fromkeys(a for a, _ in cols))
    for a in adapters_run:
        av = [t["adapters"].get(a) for t in table.values() if t["adapters"].get(a)]
        lines.append(f"| ok, {a} adapter: all checks pass | {sum(1 for v in av if v == 'pass')} of {len(av)} |")
    legend = ", ".join(f"{sym} {st}" for st, sym in SYMBOL.items() if st != "n/a") + f", {SYMBOL['n/a']} n/a (a check "\
        f"the model rules out), {NOT_RUN} not run"
    lines += ["", f"Symbols: {legend}.", ""]
    head = ["model type", "probe", "verdict"] + [f"{a}<br>{SHORT.get(ch, ch)}" for a, ch in cols] + ["note"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in sorted(table.values(), key=lambda t: t["type"]):
        cells = [SYMBOL.get(t["cells"].get(k), NOT_RUN) if k in t["cells"] else NOT_RUN for k in cols]
        note = t["reason"].replace("|", "/")
        note = note if len(note) <= 200 else note[:199] + "…"
        lines.append("| " + " | ".join([t["type"], t["probe"], t["verdict"]] + cells + [note]) + " |")
    return "\n".join(lines) + "\n"


def type_changes(da: pd.DataFrame, db: pd.DataFrame) -> list[dict]:
    """Model types that appeared, vanished or changed verdict from sweep A to sweep B."""
    a, b = type_verdicts(da), type_verdicts(db)
    out = []
    for t in sorted(set(a) | set(b)):
        before, after = a.get(t, (None, ""))[0], b.get(t, (None, ""))[0]
        kind = "appeared" if before is None else "vanished" if after is None else "changed" if before != after else None
        if kind:
            out.append({"type": t, "kind": kind, "before": before, "after": after, "reason": b.get(t, a.get(t))[1]})
    return out
