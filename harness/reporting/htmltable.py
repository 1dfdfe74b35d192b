"""The compatibility table as one HTML page a person reads in a browser.

One compact table: a row per model row, a column per adapter x check, a symbol per cell on the
status's colour (the heatmap's colours, so the two pictures agree). Hovering a cell shows its
message (``title``); clicking it opens the whole message, the declared reason and the figures
(``<details>``, no framework). The model, family, code and layout headers sort the rows (a few lines
of inline JS; ``#sort=family`` in the address sorts on load). The heatmap PNG is linked when the
run has one (``prefix-compat plots`` or ``--plots``).
"""
from __future__ import annotations

import html
import math
from pathlib import Path

from harness.core import names

from .plots import DARK_STATUSES, STATUS_COLORS, STATUS_SYMBOLS

SYMBOLS = STATUS_SYMBOLS
MEANING = {"pass": "pass", "fail": "FAIL: measured, missed its bar", "error": "ERROR: raised",
           "xfail": "expected-fail: a failure the spec declares", "xpass": "XPASS: a declared failure that now passes",
           "skip": "skipped", "inconclusive": "inconclusive: the control could not show the check can fail (not a pass)",
           "timeout": "TIMEOUT: ran past its time limit", "n/a": "n/a: no attention KV cache to prefix"}
DARK = DARK_STATUSES
ADAPTER_MEANING = {"harness": "ours", "naive": "the textbook [b, h, s, d] prefix", "peft": "PEFT's prefix tuning"}
MESSAGE_IN_TITLE = 400  # characters; the click shows the whole message

STYLE = """
body{font:13px/1.35 "DejaVu Sans",sans-serif;margin:12px;color:#222}
h1{font-size:17px;margin:0 0 4px}
.env{margin:0 0 2px;color:#444}
.legend{display:flex;flex-wrap:wrap;gap:4px 12px;margin:8px 0}
.legend span{display:inline-flex;align-items:center;gap:4px}
.sw{display:inline-block;width:20px;height:18px;line-height:18px;text-align:center;border:1px solid #888}
table{border-collapse:collapse}
th,td{border:1px solid #999;padding:1px 4px;white-space:nowrap}
thead th{background:#f3f3f3;position:sticky;top:0;z-index:2}
thead tr+tr th{top:20px}
th.v{writing-mode:vertical-rl;transform:rotate(180deg);padding:4px 1px;font-weight:normal;text-align:left}
th.sort{white-space:normal;cursor:pointer;text-decoration:underline dotted}
th.sort[data-dir=asc]::after{content:" \\25B4"}
th.sort[data-dir=desc]::after{content:" \\25BE"}
td.c{padding:0;text-align:center;width:24px;position:relative}
td.c summary{list-style:none;cursor:pointer;padding:1px 2px;font-weight:bold}
td.c summary::-webkit-details-marker{display:none}
td.c .pop{position:absolute;z-index:5;left:0;top:100%;width:36em;max-width:80vw;white-space:normal;text-align:left;
 background:#fffff4;color:#222;border:1px solid #777;padding:6px;box-shadow:2px 2px 6px #0004;font-weight:normal}
td.c .pop b{display:block}
.dark{color:#fff}
.light{color:#111}
ol.notes li{margin:2px 0}
"""

SCRIPT = """
function sortBy(th){
  var tb=document.querySelector('table tbody'), col=th.cellIndex;
  var dir=th.dataset.dir==='asc'?-1:1;
  document.querySelectorAll('table th.sort').forEach(function(h){delete h.dataset.dir;});
  th.dataset.dir=dir>0?'asc':'desc';
  var rows=Array.prototype.slice.call(tb.rows);
  rows.sort(function(a,b){return dir*a.cells[col].textContent.localeCompare(b.cells[col].textContent,undefined,{numeric:true});});
  rows.forEach(function(r){tb.appendChild(r);});
}
document.addEventListener('toggle',function(e){
  if(!e.target.open)return;
  document.querySelectorAll('table details[open]').forEach(function(d){if(d!==e.target)d.open=false;});
  var p=e.target.querySelector('.pop'); p.style.left='';  // keep the box inside the window
  var over=p.getBoundingClientRect().right-document.documentElement.clientWidth+8;
  if(over>0)p.style.left=(-over)+'px';
},true);
var m=/^#sort=(\\w+)/.exec(location.hash);
if(m){var th=document.querySelector('table th.sort[data-key="'+m[1]+'"]');if(th)sortBy(th);}
"""


def render(summaries, info_head, cols, body, notes, spec_errors=(), rows=None, env_line=str, heatmaps=()) -> str:
    """The page. ``body``: (info texts, [(cell text, note number)]) per table row, as report.table
    builds it; ``rows``: the result row (a dict, or None when not in the matrix) behind each of those
    cells, same order; ``heatmaps``: (label, href) of heatmap PNGs to link."""
    esc = html.escape
    out = ["<!doctype html><html lang='en'><meta charset='utf-8'><title>prefix-compat: compatibility</title>",
           f"<style>{STYLE}</style><h1>Prefix tuning compatibility</h1>"]
    out += [f"<p class='env'>{esc(env_line(s))}</p>" for s in summaries]
    if heatmaps:
        out.append("<p>Heatmap: " + ", ".join(f"<a href='{esc(href)}'>{esc(label)}</a>" for label, href in heatmaps)
                   + "</p>")
    out.append("<div class='legend' id='legend'>" + "".join(
        f"<span title='{esc(MEANING[s])}'><span class='sw {_tone(s)}' style='background:{STATUS_COLORS[s]}'>"
        f"{SYMBOLS[s]}</span>{esc(s)}</span>" for s in SYMBOLS)
        + "<span><span class='sw'></span>not in the matrix</span></div>")
    out.append("<p class='env'>Hover a cell for its message, click it for the whole message and figures; click "
               "an underlined header to sort. Adapters: " + "; ".join(
                   f"<b>{esc(a)}</b> ({esc(m)})" for a, m in ADAPTER_MEANING.items()) + ".</p>")
    out.append(_table(info_head, cols, body, rows or [[None] * len(cols) for _ in body], notes))
    if notes.notes:
        out.append("<h2 style='font-size:14px'>Notes</h2><ol class='notes'>"
                   + "".join(f"<li id='note-{n}'>{esc(t)}</li>" for n, t in notes.items()) + "</ol>")
    if spec_errors:
        out.append("<p>Spec files that did not load (no cells were run for them):</p><ul>"
                   + "".join(f"<li>{esc(e)}</li>" for e in spec_errors) + "</ul>")
    out.append(f"<script>{SCRIPT}</script></html>\n")
    return "".join(out)


def _tone(status: str) -> str:
    return "dark" if status in DARK else "light"


def _table(info_head, cols, body, rows, notes) -> str:
    esc = html.escape
    adapters = [a for a in names.ADAPTERS if any(c[0] == a for c in cols)]
    head1 = "".join(f"<th rowspan='2' class='sort' data-key='{_key(h)}' onclick='sortBy(this)'>{esc(h)}</th>"
                    for h in info_head)
    head1 += "".join(f"<th colspan='{sum(1 for c in cols if c[0] == a)}' title='{esc(ADAPTER_MEANING.get(a, a))}'>"
                     f"{esc(a)}</th>" for a in adapters)
    head2 = "".join(f"<th class='v' title='{esc(a)} · {esc(c)}'>{esc(c)}</th>" for a, c in cols)
    out = [f"<table><thead><tr>{head1}</tr><tr>{head2}</tr></thead><tbody>"]
    for (info, cells), raw in zip(body, rows):
        out.append("<tr>" + "".join(f"<td>{esc(x)}</td>" for x in info))
        for (a, c), (_text, note), row in zip(cols, cells, raw):
            out.append(_cell(info[0], a, c, row, note))
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _key(header: str) -> str:
    return header.split()[0].lower()


def _cell(model: str, adapter: str, check: str, row: dict | None, note: int | None) -> str:
    esc = html.escape
    if row is None:
        return f"<td class='c' title='{esc(f'{model} · {adapter} · {check}: not in the matrix')}'></td>"
    status = row["status"]
    message = _str(row.get("message"))
    title = f"{model} · {adapter} · {check}: {status}" + (f"\n{message[:MESSAGE_IN_TITLE]}" if message else "")
    if len(message) > MESSAGE_IN_TITLE:
        title += "… (click for all)"
    parts = [f"<b>{esc(model)} · {esc(adapter)} · {esc(check)}: {esc(MEANING[status])}</b>"]
    if message:
        parts.append(f"<div>{esc(message)}</div>")
    reason = _str(row.get("expected_failure"))
    if reason and status in ("xfail", "xpass"):
        parts.append(f"<div><i>declared:</i> {esc(reason)}</div>")
    figures = [f"{k} {_num(row.get(k))}" for k in ("metric", "threshold", "duration_s") if _num(row.get(k))]
    if figures:
        parts.append(f"<div><small>{esc(', '.join(figures))}</small></div>")
    if note:
        parts.append(f"<div><a href='#note-{note}'>note {note}</a></div>")
    return (f"<td class='c {_tone(status)}' data-status='{esc(status)}' style='background:{STATUS_COLORS[status]}'>"
            f"<details><summary title='{esc(title)}'>{SYMBOLS[status]}</summary>"
            f"<div class='pop'>{''.join(parts)}</div></details></td>")


def _str(value) -> str:
    return value.strip() if isinstance(value, str) else ""


def _num(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.2e}" if value and abs(value) < 1e-3 else f"{value:.3g}"
    return str(value)


def heatmap_links(run_dirs, link_from: Path | None) -> list[tuple[str, str]]:
    """(run name, href) of each run's heatmap.png that exists: relative to ``link_from`` (the folder
    the page is written to) when given, else an absolute file URI (a page printed to stdout)."""
    import os
    from urllib.parse import quote

    links = []
    for run in run_dirs:
        png = Path(run) / "heatmap.png"
        if png.is_file():
            href = (quote(Path(os.path.relpath(png.resolve(), Path(link_from).resolve())).as_posix()) if link_from
                    else png.resolve().as_uri())
            links.append((Path(run).name, href))
    return links
