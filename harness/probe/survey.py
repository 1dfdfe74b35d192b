"""A survey, not a test: the probe over every causal-LM model type of the installed transformers.

    python -m harness.probe.survey [--jobs 2] [--timeout 90] [-o docs/PROBE.md] [--json out.json]

Model types run in a pool of worker processes, each under a time limit (SIGALRM; a worker is
replaced every 15 types, so a leaking or crashing model costs only its own row), and the counts (ok / n/a / probe-failed, reasons grouped) go to a Markdown page.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

MARKER = "<!-- survey: written by python -m harness.probe.survey -->"

# reason -> group, first match wins (patterns over the probe's own messages)
GROUPS = [
    (r"^hybrid", "hybrid: recurrent / state-space state a K/V prefix cannot set (measured: K/V on the attention "
                 "layers alone miss the full-context logits)"),
    (r"needs other inputs", "the forward needs inputs besides token ids"),
    (r"one new token only", "continues a cache on one new token only"),
    (r"no attention K/V|returns no cache|holds no \(k, v\)|no per-layer keys|no layer of the model caches|takes no cache",
     "no attention KV cache"),
    (r"^not a causal LM", "not a causal LM"),
    (r"K and V head dims differ", "K and V head dims differ: the draft's kv.v_head_dim needs the spec format's MLA support"),
    (r"sub-config", "composite config: no sub-config is the language model's"),
    (r"update_indexer|store_compression_weights", "cache layers hold more than K/V (an indexer key cache or "
                                                  "compression state the prefix would have to fill too)"),
    (r"no \(attention_mask, position_ids\) candidate", "no mask/position convention reproduces the logits"),
    (r"time limit", "over the time limit"),
    (r"does not build or run:? \(?(\w+)", "tiny model does not build or run: {0}"),
    (r"attention layers differ in K/V shape", "attention layers differ in K/V shape (per-layer sizes; one heads/head_dim per spec)"),
    (r"cannot tell the head-dim axis", "head-dim axis not traced"),
    (r"not traced to a config attribute", "head dim not traced to an attribute"),
    (r"not one K/V pair per layer|layer count", "layer count not traced"),
    (r"cannot be imported", "class cannot be imported"),
    (r"draft does not pass", "draft rejected by load_spec"),
]


def group(status: str, reason: str) -> str:
    if status == "ok":
        return "ok"
    for pattern, label in GROUPS:
        m = re.search(pattern, reason)
        if m:
            return label.format(*m.groups())
    return re.sub(r"\d+", "N", reason.split(":")[0])[:80]


class _TimeLimit(BaseException):  # not an Exception: the probe's own handlers must not swallow it
    pass


def _alarm(signum, frame):
    raise _TimeLimit()


def probe_one(args) -> tuple[str, dict]:
    """One model type inside a pool worker, under SIGALRM (a worker is replaced every few types, so a
    model that leaks memory or state costs little)."""
    model_type, timeout = args
    import signal
    import warnings

    import torch

    from . import probe_model_type

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    import transformers

    transformers.logging.set_verbosity_error()  # fallback-kernel notices, one per model: noise here
    start = time.time()
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(int(timeout))
    try:
        r = probe_model_type(model_type)
    except _TimeLimit:
        return model_type, {"status": "probe-failed", "reason": f"over the time limit ({timeout:.0f} s)",
                            "seconds": round(time.time() - start, 1)}
    except BaseException as e:  # noqa: BLE001 - the probe itself crashed: a row that says so
        return model_type, {"status": "probe-failed", "reason": f"the probe crashed: {type(e).__name__}: {e}"[:300],
                            "seconds": round(time.time() - start, 1)}
    finally:
        signal.alarm(0)
    kv = r.kv
    return model_type, {"status": r.status, "reason": r.reason, "seconds": round(time.time() - start, 1),
                        "layout": kv.layout if kv else None, "container": kv.container if kv else None,
                        "heads": [str(x) for x in kv.heads] if kv else None, "conventions": r.conventions,
                        "attention_layers": r.attention_layers, "sliding_window": bool(r.sliding_window)}


def markdown(rows: dict, versions: str, timeout: float) -> str:
    counts = Counter(r["status"] for r in rows.values())
    total = len(rows)
    groups = defaultdict(list)
    for mt, r in sorted(rows.items()):
        groups[(r["status"], group(r["status"], r["reason"]))].append(mt)
    lines = [
        "## Survey", "",
        f"`python -m harness.probe.survey` over every model type in `MODEL_FOR_CAUSAL_LM_MAPPING_NAMES` ({versions}), "
        f"in a pool of worker processes, each type under a {timeout:.0f} s limit. `ok`: kv and cache inferred and a mask/position "
        "convention measured to reproduce the full-context logits (relative error <= 1e-4, float32) with a "
        "real-token prefix; `n/a`: no attention KV cache to put a prefix in, not a causal LM, a forward that needs other "
        "inputs, or a hybrid whose recurrent state a K/V prefix cannot set (measured); `probe-failed`: what blocked it "
        "is in the group name.", "",
        "| status | model types | share |", "|---|---:|---:|",
    ]
    for status in ("ok", "n/a", "probe-failed"):
        lines.append(f"| {status} | {counts.get(status, 0)} | {100 * counts.get(status, 0) / max(total, 1):.1f} % |")
    lines += [f"| total | {total} | |", "", "### By reason", "", "| status | reason | count | model types |",
              "|---|---|---:|---|"]
    for (status, label), types in sorted(groups.items(), key=lambda kv: (kv[0][0] != "ok", kv[0][0], -len(kv[1]))):
        lines.append(f"| {status} | {label} | {len(types)} | {', '.join(types)} |")
    lines += ["", "### Every model type", "", "| model type | status | layout | KV heads | conventions | reason |",
              "|---|---|---|---|---|---|"]
    for mt, r in sorted(rows.items()):
        layout = "[" + ", ".join(r["layout"]) + "]" if r.get("layout") else ""
        heads = ", ".join(r["heads"]) if r.get("heads") else ""
        conv = " + ".join(r["conventions"]) if r.get("conventions") and r["status"] == "ok" else ""
        reason = r["reason"].replace("|", "/").replace("\n", " ")[:220]
        lines.append(f"| {mt} | {r['status']} | {layout} | {heads} | {conv} | {reason} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=90)
    ap.add_argument("-o", "--output", default=None, help="write the Markdown page here")
    ap.add_argument("--json", default=None, help="write every row as JSON here")
    ap.add_argument("--only", default=None, help="comma-separated model types (default: all)")
    args = ap.parse_args(argv)
    import torch
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    types = args.only.split(",") if args.only else sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
    rows = {}
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(args.jobs, maxtasksperchild=15) as pool:
        for mt, r in pool.imap_unordered(probe_one, [(t, args.timeout) for t in types]):
            rows[mt] = r
            print(f"{mt}: {r['status']} {r['seconds']}s {r['reason'][:150]}", file=sys.stderr, flush=True)
    versions = f"transformers {transformers.__version__}, torch {torch.__version__}"
    page = markdown(rows, versions, args.timeout)
    if args.output:  # keep a hand-written part above the marker, replace the survey below it
        out = Path(args.output)
        head = out.read_text(encoding="utf-8").split(MARKER)[0] if out.exists() else ""
        out.write_text((head + MARKER + "\n" if MARKER in (out.read_text(encoding="utf-8") if out.exists() else "")
                        else "") + page, encoding="utf-8")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1), encoding="utf-8")
    counts = Counter(r["status"] for r in rows.values())
    print(dict(counts), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
