"""Compatibility tables of a run, for docs: Markdown or HTML.

One row per model row (family, code source, KV layout, concat dim), one column per adapter x
check; cells are pass / FAIL / expected-fail / error / skipped, with numbered footnotes carrying
the reason or the first line of the error. The header names the environment and whether the
run is complete.
"""
from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from . import names, results

CELL_TEXT = {"pass": "pass", "fail": "FAIL", "error": "ERROR", "xfail": "expected-fail", "xpass": "XPASS",
             "skip": "skipped"}
MISSING = "-"


def run_summary(run_dir: Path, df: pd.DataFrame | None = None) -> dict:
    meta = results.read_run_meta(run_dir)
    df = results.read_run(run_dir) if df is None else df
    first = df.iloc[0] if len(df) else None
    versions = meta.get("versions") or {}

    def pick(col, key):
        return str(first[col]) if first is not None else versions.get(key, "?")

    expected = meta.get("expected_cells")
    complete = expected is not None and len(df) >= expected and meta.get("finished_at") is not None
    counts = df["status"].value_counts().to_dict() if len(df) else {}
    return {
        "run_id": meta.get("run_id", Path(run_dir).name), "date": meta.get("started_at") or (pick("started_at", "")),
        "torch": pick("torch_version", "torch"), "transformers": pick("transformers_version", "transformers"),
        "peft": pick("peft_version", "peft"), "device": pick("device", "device") if first is not None else meta.get("device", "?"),
        "dtype": pick("dtype", "dtype") if first is not None else meta.get("dtype", "?"),
        "commit": pick("git_commit", "") if first is not None else meta.get("git_commit", "?"),
        "rows": len(df), "expected": expected, "complete": complete, "counts": counts,
    }


def _columns(df: pd.DataFrame) -> list[tuple[str, str]]:
    present = set(zip(df["adapter"], df["check"]))
    return [(a, c) for a in names.ADAPTERS for c in names.CHECKS if (a, c) in present]


def _rows(df: pd.DataFrame) -> pd.DataFrame:
    keys = ["model", "code_source"]
    info = df.groupby(keys, sort=False).agg(family=("family", "first"), kv_layout=("kv_layout", "first"),
                                             concat_dim=("concat_dim", "first")).reset_index()
    return info.sort_values(keys, kind="stable").reset_index(drop=True)


class _Footnotes:
    def __init__(self):
        self.notes: dict[str, int] = {}

    def ref(self, text: str) -> int:
        return self.notes.setdefault(text, len(self.notes) + 1)


def _cell(row: pd.Series | None, notes: _Footnotes) -> tuple[str, int | None]:
    if row is None:
        return MISSING, None
    status = row["status"]
    text = CELL_TEXT[status]
    if status == "pass":
        return text, None
    reason = row["expected_failure"] if status in ("xfail", "xpass") and row["expected_failure"] else None
    first = _first_line(row["message"])
    note = f"{reason} (measured: {first})" if reason and first else (reason or first or status)
    return text, notes.ref(note)


def _first_line(text) -> str:
    if not isinstance(text, str):
        return ""
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:300]
    return ""


def table(run_dir: Path, fmt: str = "md") -> str:
    run_dir = Path(run_dir)
    df = results.read_run(run_dir)
    s = run_summary(run_dir, df)
    cols = _columns(df)
    rows = _rows(df) if len(df) else pd.DataFrame(columns=["model", "code_source", "family", "kv_layout", "concat_dim"])
    index = {(r.model, r.code_source, r.adapter, r.check): r for r in df.itertuples(index=False)}
    notes = _Footnotes()
    body = []
    for r in rows.itertuples(index=False):
        cells = []
        for adapter, check in cols:
            hit = index.get((r.model, r.code_source, adapter, check))
            cells.append(_cell(pd.Series(hit._asdict()) if hit is not None else None, notes))
        body.append(([r.model, r.family, r.code_source, r.kv_layout, str(r.concat_dim)], cells))
    return (_markdown if fmt == "md" else _html)(s, cols, body, notes)


def _env_line(s: dict) -> str:
    state = "complete" if s["complete"] else f"PARTIAL ({s['rows']} of {s['expected'] or '?'} cells)"
    counts = ", ".join(f"{k} {v}" for k, v in sorted(s["counts"].items()))
    return (f"run `{s['run_id']}` ({s['date']}): torch {s['torch']}, transformers {s['transformers']}, "
            f"peft {s['peft']}, device {s['device']}, dtype {s['dtype']}, commit `{s['commit']}`; "
            f"{state}; {s['rows']} cells: {counts}")


def _markdown(s, cols, body, notes) -> str:
    head = ["model", "family", "code", "KV layout", "concat dim"] + [f"{a}<br>{c}" for a, c in cols]
    lines = [f"_{_env_line(s)}_", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for info, cells in body:
        texts = [t if n is None else f"{t} [{n}]" for t, n in cells]
        lines.append("| " + " | ".join(info + texts) + " |")
    if notes.notes:
        lines += ["", "Notes:", ""]
        lines += [f"{n}. {text.replace('|', '/')}" for text, n in notes.notes.items()]
    return "\n".join(lines) + "\n"


def _html(s, cols, body, notes) -> str:
    esc = html.escape
    colors = {"pass": "#c8f7c5", "FAIL": "#f7c5c5", "ERROR": "#f7d9c5", "expected-fail": "#eeeeee",
              "XPASS": "#f7f0c5", "skipped": "#ffffff", MISSING: "#ffffff"}
    out = ["<!doctype html><meta charset='utf-8'><title>prefix-compat</title>",
           "<style>td,th{border:1px solid #999;padding:2px 6px;font:13px sans-serif}table{border-collapse:collapse}</style>",
           f"<p>{esc(_env_line(s))}</p><table><tr>"]
    out += [f"<th>{esc(h)}</th>" for h in ("model", "family", "code", "KV layout", "concat dim")]
    out += [f"<th>{esc(a)}<br>{esc(c)}</th>" for a, c in cols] + ["</tr>"]
    for info, cells in body:
        out.append("<tr>" + "".join(f"<td>{esc(x)}</td>" for x in info))
        for text, n in cells:
            sup = f"<sup>{n}</sup>" if n else ""
            out.append(f"<td style='background:{colors.get(text, '#fff')}'>{esc(text)}{sup}</td>")
        out.append("</tr>")
    out.append("</table><ol>" + "".join(f"<li>{esc(t)}</li>" for t in notes.notes) + "</ol>\n")
    return "".join(out)
