"""Benchmarks of prefix-compat: the training step against PEFT and the limit
(``python -m benchmarks.train_step``) and the matrix's own cost (``python -m benchmarks.matrix``).

Both print a table, end with one machine-readable line, and append their figures, with the
environment they ran in, to ``results/bench/*.parquet`` (not tracked by git). See README.md here.
This module holds what both share: the environment, pairwise medians, memory and Parquet.
"""
from __future__ import annotations

import os
import platform
import re
import statistics
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results" / "bench"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def environment(device: str = "cpu", dtype: str = "float32") -> dict:
    """What a figure depends on besides the code: versions, machine, device, dtype, threads."""
    import torch

    from harness.reporting.results import git_commit, library_versions

    versions = library_versions()
    env = {f"{k}_version": v for k, v in versions.items()}
    env.update(device=device, dtype=dtype, torch_threads=torch.get_num_threads(), cpu_count=os.cpu_count() or 0,
               machine=platform.machine(), git_commit=git_commit(ROOT), measured_at=now(),
               load_average=os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan"))
    if device == "cuda":
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def pairwise_median(numerators: list[float], denominators: list[float]) -> float:
    """Median over steps of step-by-step ratios: two variants timed back to back share the
    machine's state at that moment, so their ratio is steadier than a ratio of medians on a
    busy machine."""
    if not numerators or len(numerators) != len(denominators):
        raise ValueError(f"pairwise_median needs two equally long, non-empty series, got {len(numerators)} "
                         f"and {len(denominators)}")
    return statistics.median(a / b for a, b in zip(numerators, denominators))


def append_parquet(kind: str, rows: list[dict]) -> Path:
    """One new file per benchmark run under results/bench/ (appending never rewrites earlier runs)."""
    import pandas as pd

    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S") + "-" + os.urandom(2).hex()
    path = RESULTS / f"{kind}-{stamp}.parquet"
    pd.DataFrame(rows).to_parquet(path, index=False)
    return path


def fmt_ratio(value, digits: int = 3) -> str:
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"


LAST_LINE_PATTERNS = {
    "train_step": re.compile(r"^ratios harness/limit=(\d+\.\d+) harness/peft=(\d+\.\d+|n/a) mem harness/peft=(\d+\.\d+|n/a)$"),
    # overhead can read below 0 on a busy machine (start-up timed slower than the run itself)
    "matrix": re.compile(r"^matrix speedup=(\d+\.\d+) overhead=(-?\d+\.\d+) cell_cost_growth=(\d+\.\d+|n/a)$"),
}


# ----------------------------------------------------------------------------- CPU memory
def rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark of this process's RSS (Linux: ``5`` into clear_refs),
    so the peak read next covers only what follows. False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """VmHWM (the peak RSS since the last reset) on Linux; ru_maxrss (peak since start) elsewhere."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    import resource

    scale = 1 if platform.system() == "Darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
