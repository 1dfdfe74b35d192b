"""Comparing two runs cell by cell: what a new model or library release broke, or fixed.

A cell is (model, code source, adapter, check). A regression is a cell that passed in run A and
does anything else in run B: ``inconclusive`` (no evidence any more), ``timeout`` and ``n/a``
included. A regression whose new status is ``xfail`` is *declared*: a spec
says that failure is expected under B's library versions, so it is listed but does not fail the
gate. Runs may come from different library versions or machines: that is the point.

When both runs are sweeps (harness/reporting/sweeps.py), the diff also lists the model types that
appeared, vanished or changed verdict: the regression check for a new transformers release.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .report import checked_rows, run_summary
from .sweeps import is_sweep, type_changes

KEY = ["model", "code_source", "adapter", "check"]
WORKS = ("pass", "xpass")


@dataclass
class Change:
    model: str
    code_source: str
    adapter: str
    check: str
    before: str | None
    after: str | None
    message: str = ""
    declared: str | None = None  # the spec's reason when B's failure is a declared expected failure

    @property
    def cell(self) -> str:
        # a sweep's probe rows have no adapter ("-"): named as the run names them, e.g. afmoe-probe
        parts = [self.model] + ([self.adapter] if self.adapter != "-" else []) + [self.check]
        return "-".join(parts) + ("" if self.code_source in ("transformers", "reference") else f" ({self.code_source})")


@dataclass
class RunDiff:
    a: dict
    b: dict
    regressions: list[Change] = field(default_factory=list)
    fixes: list[Change] = field(default_factory=list)
    changed: list[Change] = field(default_factory=list)  # non-pass to another non-pass status
    new: list[Change] = field(default_factory=list)
    vanished: list[Change] = field(default_factory=list)
    types: list[dict] | None = None  # sweeps only: model types appeared / vanished / changed verdict

    @property
    def undeclared_regressions(self) -> list[Change]:
        return [c for c in self.regressions if not c.declared]

    def gate_failures(self) -> list[str]:
        """What fails a regression gate: undeclared regressions, cells that passed in A and are gone
        from B (a dropped spec or an interrupted run: refresh the baseline if intended), and an
        incomplete B."""
        out = [f"{c.cell}: {c.before} -> {c.after}" for c in self.undeclared_regressions]
        out += [f"{c.cell}: passed in A, missing from B" for c in self.vanished if c.before == "pass"]
        if not self.b["complete"]:
            out.append(f"run B ({self.b['run_id']}) is incomplete: {self.b['rows']} of {self.b['expected']} cells")
        return out


def diff_runs(run_a: Path, run_b: Path) -> RunDiff:
    """ValueError when either run is damaged or has no cells: against nothing, every cell would
    read as new or vanished and an empty baseline would pass any gate."""
    da, db = checked_rows(run_a, "run A"), checked_rows(run_b, "run B")
    out = RunDiff(a=run_summary(run_a, da), b=run_summary(run_b, db))
    ia = {tuple(r[k] for k in KEY): r for r in da.to_dict("records")}
    ib = {tuple(r[k] for k in KEY): r for r in db.to_dict("records")}
    for key in sorted(set(ia) | set(ib)):
        ra, rb = ia.get(key), ib.get(key)
        before = ra["status"] if ra else None
        after = rb["status"] if rb else None
        change = Change(*key, before=before, after=after, message=_first(rb["message"]) if rb else "",
                        declared=(rb.get("expected_failure") or None) if rb and after == "xfail" else None)
        if ra is None:
            out.new.append(change)
        elif rb is None:
            out.vanished.append(change)
        elif before == "pass" and after != "pass":
            out.regressions.append(change)
        elif before not in WORKS and after in WORKS:  # xpass: a declared failure that now passes
            out.fixes.append(change)
        elif before != after:
            out.changed.append(change)
    if is_sweep(da) and is_sweep(db):
        out.types = type_changes(da, db)
    return out


def _first(text) -> str:
    if not isinstance(text, str):
        return ""
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), "")[:200]


def render(d: RunDiff, fmt: str = "text", gate: bool = False) -> str:
    md = fmt == "md"
    lines = []
    versions = [("run", d.a["run_id"], d.b["run_id"]), ("date", d.a["date"], d.b["date"])]
    versions += [(k, d.a[k], d.b[k]) for k in ("torch", "transformers", "peft", "device", "dtype", "commit")]
    versions += [("complete", str(d.a["complete"]), str(d.b["complete"]))]
    if md:
        lines += ["| | A | B |", "|---|---|---|"] + [f"| {k} | {a} | {b} |" for k, a, b in versions] + [""]
    else:
        width = max(len(str(a)) for _, a, _ in versions)
        lines += [f"{k:>12}  A: {str(a):<{width}}  B: {b}" for k, a, b in versions] + [""]
    sections = [("Regressions", d.regressions), ("Fixes", d.fixes), ("Other status changes", d.changed),
                ("New cells", d.new), ("Vanished cells", d.vanished)]
    for title, items in sections:
        quiet = title in ("New cells", "Vanished cells")  # a status is enough there
        head = f"{title}: {len(items)}"
        lines.append(f"### {head}" if md else head)
        for c in items:
            note = "" if quiet else (f"declared expected failure: {c.declared}" if c.declared else c.message)
            arrow = f"{c.before or '(none)'} -> {c.after or '(none)'}"
            lines.append(f"- `{c.cell}`: {arrow}" + (f" ({note})" if note else "") if md
                         else f"  {c.cell}: {arrow}" + (f"  [{note}]" if note else ""))
        if md:
            lines.append("")
    if d.types is not None:
        lines += _type_section(d.types, md)
    bad = len(d.undeclared_regressions)
    verdict = (f"{bad} undeclared regression(s): FAIL" if bad else
               f"no undeclared regressions ({len(d.regressions)} declared in specs)")
    lines.append(f"**{verdict}**" if md else verdict)
    if gate:
        failures = d.gate_failures()
        lines.append(("gate: FAIL\n" + "\n".join(f"  {f}" for f in failures)) if failures else "gate: ok")
    return "\n".join(lines) + "\n"



def _type_section(changes: list[dict], md: bool) -> list[str]:
    """Sweeps: one line per model type that appeared, vanished or changed verdict."""
    lines = []
    for kind, title in (("changed", "Model types that changed verdict"), ("appeared", "Model types that appeared"),
                        ("vanished", "Model types that vanished")):
        items = [c for c in changes if c["kind"] == kind]
        lines.append(f"### {title}: {len(items)}" if md else f"{title}: {len(items)}")
        for c in items:
            arrow = f"{c['before'] or '(none)'} -> {c['after'] or '(none)'}"
            note = (c["reason"] or "")[:200]
            lines.append(f"- `{c['type']}`: {arrow}" + (f" ({note})" if note else "") if md
                         else f"  {c['type']}: {arrow}" + (f"  [{note}]" if note else ""))
        if md:
            lines.append("")
    return lines
