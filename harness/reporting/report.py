"""Compatibility tables of a run, for docs: Markdown or HTML.

One row per model row (family, code source, KV layout, concat dim), one column per adapter x
check; cells are pass / FAIL / expected-fail / ERROR / XPASS / skipped / inconclusive / TIMEOUT /
n/a, with numbered footnotes carrying the reason or the first line of the error. The header names
the environment and whether the run is complete. A damaged run or one without cells makes no table.
The HTML page (harness/reporting/htmltable.py) shows the same cells as symbols on their status colour.
"""
from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from harness.core import names

from . import results

CELL_TEXT = {"pass": "pass", "fail": "FAIL", "error": "ERROR", "xfail": "expected-fail", "xpass": "XPASS",
             "skip": "skipped", "inconclusive": "inconclusive", "timeout": "TIMEOUT", "n/a": "n/a"}
MISSING = "-"
LEGEND = ("Cells: `pass`, `FAIL` (measured and missed its bar), `ERROR` (raised), `expected-fail` (a failure the "
          "spec declares, with its reason), `XPASS` (a declared failure that now passes), `skipped`, "
          "`inconclusive` (the check's control could not show the check can fail here: not a pass), `TIMEOUT` "
          "(ran past its time limit), `n/a` (the model has no attention KV cache to prefix), `-` (not in "
          "the matrix). [n] points to a note. Adapters: `harness` (ours), `naive` (the textbook [b, h, s, d] "
          "prefix), `peft` (PEFT's prefix tuning).")


def run_summary(run_dir: Path, df: pd.DataFrame | None = None, problems: list[str] | None = None) -> dict:
    """Environment and completeness of a run, from its rows and run.json; ``problems`` lists its
    damaged files (read here when ``df`` is not given). A damaged run is never complete."""
    meta = results.read_run_meta(run_dir)
    if df is None:
        df, problems = results.read_run_checked(run_dir)
    problems = list(problems or [])
    first = df.iloc[0].to_dict() if len(df) else {}
    versions = meta.get("versions") or {}

    def get(col, fallback):
        value = first.get(col)
        return str(value) if value is not None and value == value else str(fallback)

    def distinct(col, fallback):
        """Every value a column holds, in order: a matrix run with the dtype axis holds float32 and bfloat16."""
        values = [str(v) for v in dict.fromkeys(df[col].dropna())] if col in df.columns and len(df) else []
        return ", ".join(values) or str(fallback)

    expected = meta.get("expected_cells")
    wanted = set(meta.get("expected_cell_ids") or [])
    have = {n.split("[", 1)[-1].rstrip("]") for n in df["nodeid"].dropna()} if len(df) else set()
    complete = not problems and meta.get("finished_at") is not None and (
        wanted <= have if wanted else expected is not None and len(df) >= expected)
    return {
        "run_id": meta.get("run_id", Path(run_dir).name),
        "date": meta.get("started_at") or get("started_at", "?"),
        "torch": get("torch_version", versions.get("torch", "?")),
        "transformers": get("transformers_version", versions.get("transformers", "?")),
        "peft": get("peft_version", versions.get("peft", "?")),
        "device": distinct("device", meta.get("device", "?")), "dtype": distinct("dtype", meta.get("dtype", "?")),
        "commit": get("git_commit", meta.get("git_commit", "?")),
        "rows": len(df), "expected": expected,
        "complete": complete, "missing": sorted(wanted - have),
        "counts": df["status"].value_counts().to_dict() if len(df) else {},
        "problems": problems,
    }


def checked_rows(run_dir: Path, what: str = "run") -> pd.DataFrame:
    """The rows of a run that is whole and measured something; ValueError in one line otherwise
    (a table or diff of half a run would silently pass for the whole)."""
    df, problems = results.read_run_checked(run_dir)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ValueError(f"{what} {run_dir} is damaged: {problems[0]}{more}; move the damaged file aside "
                         f"to use the rest")
    if not len(df):
        raise ValueError(f"{what} {run_dir} has no cells: nothing was measured")
    return df


def _columns(df: pd.DataFrame) -> list[tuple[str, str]]:
    present = set(zip(df["adapter"], df["check"]))
    return [(a, c) for a in names.ADAPTERS for c in names.CHECKS if (a, c) in present]


class _Footnotes:
    """Notes numbered by their reason; each keeps the distinct measurements it stands for."""

    MAX_EXAMPLES = 2

    def __init__(self):
        self.notes: dict[str, int] = {}
        self.examples: dict[str, list[str]] = {}

    def ref(self, text: str, measured: str = "") -> int:
        number = self.notes.setdefault(text, len(self.notes) + 1)
        seen = self.examples.setdefault(text, [])
        if measured and measured not in seen:
            seen.append(measured)
        return number

    def items(self):
        for text, number in self.notes.items():
            seen = self.examples[text]
            shown = "; ".join(seen[: self.MAX_EXAMPLES]) + (f" (+{len(seen) - self.MAX_EXAMPLES} more)"
                                                               if len(seen) > self.MAX_EXAMPLES else "")
            yield number, text + (f" Measured: {shown}" if shown else "")


def _cell(row: dict | None, notes: _Footnotes) -> tuple[str, int | None]:
    if row is None:
        return MISSING, None
    status = row["status"]
    text = CELL_TEXT[status]
    if status == "pass":
        return text, None
    reason = row["expected_failure"] if status in ("xfail", "xpass") and row["expected_failure"] else None
    first = _first_line(row["message"])
    if reason:
        return text, notes.ref(reason.rstrip(".") + ".", first)
    return text, notes.ref(first or status)


def _first_line(text) -> str:
    if not isinstance(text, str):
        return ""
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:300]
    return ""


PIVOTS = {"transformers": "transformers_version", "peft": "peft_version", "torch": "torch_version",
          "device": "device", "dtype": "dtype", "attn": "attn_implementation"}
# Pivots on a matrix axis (harness/matrix/axes.py): one run holds every value, and a row's name carries the
# non-default value ("llama-bf16-eager"), which the pivoted table drops from the row name.
AXIS_PIVOTS = {"dtype", "attn"}


def _without_axis(model: str, value: str, pivot: str) -> str:
    token = "-" + (names.DTYPE_SHORT.get(value, value) if pivot == "dtype" else value)
    if model.endswith(token):
        return model[: -len(token)]
    head, sep, tail = model.rpartition(token + "-")
    return head + "-" + tail if sep else model


def table(run_dirs, fmt: str = "md", pivot: str | None = None, link_from: Path | None = None) -> str:
    """The table of one run, or with ``pivot`` (e.g. ``transformers``) one table across several
    runs with a row per (model, pivot value): a cell per (model, adapter, check, version).
    ``link_from``: the folder an HTML page is written to, so its links to heatmaps are relative."""
    run_dirs = [Path(p) for p in (run_dirs if isinstance(run_dirs, (list, tuple)) else [run_dirs])]
    frames = [checked_rows(p) for p in run_dirs]
    summaries = [run_summary(p, df) for p, df in zip(run_dirs, frames)]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=results.COLUMNS)
    pivot_col = PIVOTS[pivot] if pivot else None
    df["_pivot"] = df[pivot_col].astype(str) if pivot_col else ""
    if pivot in AXIS_PIVOTS and len(df):
        df["model"] = [_without_axis(str(m), str(v), pivot) for m, v in zip(df["model"], df["_pivot"])]
    elif pivot_col:
        owners = df.groupby("_pivot")["run_id"].nunique()
        shared = owners[owners > 1]
        if len(shared):
            raise ValueError(f"several runs have {pivot} {', '.join(shared.index)}: pass one run per {pivot} value")
    # A spec file that did not load has one row (check "spec"): listed under the table, not in it.
    broken = df[df["check"] == "spec"].to_dict("records") if len(df) else []
    df = df[df["check"] != "spec"] if len(df) else df
    # A spec declaring not_applicable has one n/a row (check "applicable", harness/matrix/cells.py): listed too.
    na = df[df["check"] == "applicable"].to_dict("records") if len(df) else []
    df = df[df["check"] != "applicable"] if len(df) else df
    cols = _columns(df)
    keys = ["model", "code_source", "_pivot"]
    rows = (df.groupby(keys, sort=False).agg(family=("family", "first"), kv_layout=("kv_layout", "first"),
                                             concat_dim=("concat_dim", "first")).reset_index()
            .sort_values(keys, kind="stable") if len(df) else pd.DataFrame(columns=keys))
    index = {(r["model"], r["code_source"], r["_pivot"], r["adapter"], r["check"]): r for r in df.to_dict("records")}
    notes = _Footnotes()
    body, raw = [], []
    for r in rows.to_dict("records"):
        raw.append([index.get((r["model"], r["code_source"], r["_pivot"], a, c)) for a, c in cols])
        cells = [_cell(row, notes) for row in raw[-1]]
        info = [r["model"]] + ([r["_pivot"]] if pivot else []) + [r["family"], r["code_source"], r["kv_layout"],
                                                                    r["concat_dim"]]
        body.append(([_text(x) for x in info], cells))
    info_head = ["model"] + ([pivot] if pivot else []) + ["family", "code", "KV layout", "concat dim"]
    spec_errors = [f"{r['model']}: {_text(r['message'])}" for r in broken]
    if fmt == "md":
        text = _markdown(summaries, info_head, cols, body, notes, spec_errors)
        if na:
            text += "\nNot applicable (no attention KV cache to prefix; measured on the tiny model):\n\n" + "".join(
                f"- {r['model']}: {CELL_TEXT[r['status']]}: {' '.join(_text(r['message']).split())}\n" for r in na)
        return text
    from .htmltable import heatmap_links

    page = _html(summaries, info_head, cols, body, notes, spec_errors, raw, heatmap_links(run_dirs, link_from))
    if na:  # the same list as the Markdown table's, before the page ends
        items = "".join(f"<li>{html.escape(r['model'])}: {html.escape(' '.join(_text(r['message']).split()))}</li>" for r in na)
        page = page.replace("</body>", f"<h3>Not applicable (no attention KV cache to prefix)</h3><ul>{items}</ul></body>", 1)
    return page


def _text(value) -> str:
    """A table cell's text: '' for a missing value (None or NaN), whole numbers without '.0'."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _env_line(s: dict) -> str:
    state = "complete" if s["complete"] else f"PARTIAL ({s['rows']} of {s['expected'] or '?'} cells)"
    counts = ", ".join(f"{k} {v}" for k, v in sorted(s["counts"].items()))
    return (f"run `{s['run_id']}` ({s['date']}): torch {s['torch']}, transformers {s['transformers']}, "
            f"peft {s['peft']}, device {s['device']}, dtype {s['dtype']}, commit `{s['commit']}`; "
            f"{state}; {s['rows']} cells: {counts}")


def _markdown(summaries, info_head, cols, body, notes, spec_errors=()) -> str:
    head = info_head + [f"{a}<br>{c}" for a, c in cols]
    lines = ["# Prefix tuning compatibility", ""] + [f"_{_env_line(s)}_  " for s in summaries]
    lines += ["", LEGEND, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for info, cells in body:
        texts = [t if n is None else f"{t} [{n}]" for t, n in cells]
        lines.append("| " + " | ".join(info + texts) + " |")
    if notes.notes:
        lines += ["", "Notes:", ""]
        lines += [f"{n}. {text.replace('|', '/')}" for n, text in notes.items()]
    if spec_errors:
        lines += ["", "Spec files that did not load (no cells were run for them):", ""]
        lines += [f"- {' '.join(e.split())}" for e in spec_errors]
    return "\n".join(lines) + "\n"


def _html(summaries, info_head, cols, body, notes, spec_errors=(), rows=None, heatmaps=()) -> str:
    # the page a person reads: harness/reporting/htmltable.py
    from .htmltable import render

    return render(summaries, info_head, cols, body, notes, spec_errors, rows, _env_line, heatmaps)
