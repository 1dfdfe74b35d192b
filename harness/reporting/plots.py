"""Pictures of a run, written next to its Parquet files: a heatmap of the matrix and, per model,
the held-out loss curves of the brief training for each adapter. Needs matplotlib (extra 'plots')."""
from __future__ import annotations

import json
from pathlib import Path

from harness.core import names

from . import results

STATUS_COLORS = {"pass": "#4caf50", "fail": "#e53935", "error": "#fb8c00", "xfail": "#bdbdbd",
                 "xpass": "#fdd835", "skip": "#90caf9", "inconclusive": "#9575cd", "timeout": "#d81b60",
                 "n/a": "#eeeeee"}
NOT_IN_MATRIX = "#ffffff"
# A glyph per status, so the heatmap and the HTML page read without colour too (DejaVu Sans has them all).
STATUS_SYMBOLS = {"pass": "✓", "fail": "✗", "error": "!", "xfail": "⊘", "xpass": "✓!", "skip": "–",
                  "inconclusive": "?", "timeout": "…", "n/a": "·"}
DARK_STATUSES = {"pass", "fail", "error", "inconclusive", "timeout"}  # white glyphs on these colours


def write_plots(run_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgb
    from matplotlib.patches import Patch

    run_dir = Path(run_dir)
    df = results.read_run(run_dir)  # damaged parts left out: a finished run still gets its pictures
    if not len(df):
        return []
    written = []
    rows = sorted({(m, c) for m, c in zip(df["model"], df["code_source"])})
    cols = [(a, c) for a in names.ADAPTERS for c in names.CHECKS if ((df["adapter"] == a) & (df["check"] == c)).any()]
    index = {(r.model, r.code_source, r.adapter, r.check): r.status for r in df.itertuples()}
    grid = [[to_rgb(STATUS_COLORS.get(index.get((m, s, a, c)), NOT_IN_MATRIX)) for a, c in cols] for m, s in rows]
    fig, ax = plt.subplots(figsize=(1.0 + 0.45 * len(cols), 1.2 + 0.4 * len(rows)))
    ax.imshow(grid, aspect="auto")
    for y, (m, s) in enumerate(rows):
        for x, (a, c) in enumerate(cols):
            status = index.get((m, s, a, c))
            if status in STATUS_SYMBOLS:
                ax.text(x, y, STATUS_SYMBOLS[status], ha="center", va="center", fontsize=8,
                        color="white" if status in DARK_STATUSES else "black")
    ax.set_xticks(range(len(cols)), [f"{a}\n{c}" for a, c in cols], rotation=90, fontsize=7)
    ax.set_yticks(range(len(rows)), [m if s in ("transformers", "reference") else f"{m} ({s})" for m, s in rows], fontsize=8)
    ax.set_xticks([x - 0.5 for x in range(1, len(cols))], minor=True)
    ax.set_yticks([y - 0.5 for y in range(1, len(rows))], minor=True)
    ax.grid(which="minor", color="white", linewidth=1)
    ax.tick_params(which="minor", length=0)
    ax.legend(handles=[Patch(color=c, label=f"{STATUS_SYMBOLS[s]} {s}") for s, c in STATUS_COLORS.items()], fontsize=7,
              bbox_to_anchor=(1.01, 1), loc="upper left")
    ax.set_title(f"prefix-compat {run_dir.name}", fontsize=9)
    fig.tight_layout()
    path = run_dir / "heatmap.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    train = df[(df["check"] == "train") & df["details"].notna()]
    for (model, source), group in train.groupby(["model", "code_source"]):
        fig, ax = plt.subplots(figsize=(5, 3.2))
        drew = False
        for r in group.itertuples():
            curve = _curve(r.details)
            if curve:
                steps, values = zip(*curve)
                ax.plot(steps, values, marker="o", markersize=2, label=f"{r.adapter} ({r.status})")
                drew = True
        if not drew:
            plt.close(fig)
            continue
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("held-out KL to the teacher")
        ax.set_title(f"{model} ({source}): recover a planted prefix", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = run_dir / (f"loss-{model}.png" if source in ("transformers", "reference") else f"loss-{model}-{source}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _curve(details) -> list | None:
    """The loss curve of a train row's details, or None when absent or not readable as one."""
    try:
        curve = json.loads(details).get("curve") if isinstance(details, str) else None
        return [(float(x), float(y)) for x, y in curve] if curve else None
    except (ValueError, TypeError, AttributeError):
        return None
