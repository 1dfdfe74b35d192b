"""GPUs for the matrix: one xdist worker per GPU, models that do not fit, clean devices after a cell.

- ``-n auto`` with ``--device cuda`` (or ``auto`` on a machine with GPUs) starts one worker per GPU
  (the ``pytest_xdist_auto_num_workers`` hook) and worker ``gw<i>`` uses GPU ``i mod N``.
  The worker narrows ``CUDA_VISIBLE_DEVICES`` to its GPU before anything in it touches CUDA (so
  "cuda" means that GPU and nothing can land on another); when CUDA was already initialised in
  the process, it falls back to ``torch.cuda.set_device``.
- A model whose estimated need (parameters x dtype size x the copies the matrix holds, plus room
  for activations) exceeds the GPU's free memory is a ``skip`` naming both figures.
- After every cell on a GPU the device is cleaned (the failed test's traceback, which pins its
  tensors, is dropped; gc; empty_cache), so an out-of-memory error costs one ``error`` row and the
  next cell starts on a clean device. Peak memory is measured per cell.

No GPU has run this code yet (docs/GPU.md); tests/test_devices.py covers it on the CPU with a
fake device count and fake free memory.
"""
from __future__ import annotations

import gc
import os
import sys

import torch

VISIBLE = "CUDA_VISIBLE_DEVICES"
# The matrix holds the worker's base model and one cell's deep copy of it at once.
COPIES_HELD = 2
# Activations, the optimiser's state of the prefix and the CUDA context: a share of the weights
# and a fixed floor (a tiny model still needs its context).
HEADROOM_FRACTION = 0.2
HEADROOM_BYTES = 1 << 30


def wants_cuda(device_option: str) -> bool:
    """Whether ``--device`` resolves to CUDA here (auto takes CUDA when present)."""
    return device_option == "cuda" or (device_option == "auto" and torch.cuda.is_available())


def gpu_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def auto_workers(device_option: str) -> int | None:
    """Workers for ``-n auto``: one per GPU on a CUDA run, None (xdist's CPU count) otherwise or when
    the user set xdist's own PYTEST_XDIST_AUTO_NUM_WORKERS."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS") or not wants_cuda(device_option):
        return None
    n = gpu_count()
    return n or None


def worker_index(worker_id: str) -> int:
    """``gw3`` -> 3 (xdist names its workers gw0, gw1, ...)."""
    digits = worker_id.removeprefix("gw")
    if not digits.isdigit():
        raise ValueError(f"not an xdist worker id: {worker_id!r}")
    return int(digits)


def assigned_gpu(worker_id: str, count: int) -> int:
    """The GPU (0..count-1) of a worker: worker i uses GPU i mod count."""
    if count < 1:
        raise ValueError("no GPU to assign")
    return worker_index(worker_id) % count


def pin_worker(worker_id: str, count: int, environ=os.environ) -> tuple[int, str]:
    """Make this worker use its GPU: (its index among the GPUs the controller saw, what was done).

    ``count``: the GPUs the controller saw. The physical id is the i-th entry of an existing
    CUDA_VISIBLE_DEVICES (a Slurm or CI allocation), else i itself. Must run before anything in
    the worker queries CUDA (even torch.cuda.is_available() makes the driver read the variable)."""
    index = assigned_gpu(worker_id, count)
    existing = [d.strip() for d in environ.get(VISIBLE, "").split(",") if d.strip()]
    physical = existing[index] if index < len(existing) else str(index)
    if not torch.cuda.is_initialized():
        environ[VISIBLE] = physical  # read by CUDA at its first initialisation in this process
        return index, f"{VISIBLE}={physical}"
    torch.cuda.set_device(index)
    return index, f"torch.cuda.set_device({index})"


# ----------------------------------------------------------------------------- memory
def dtype_bytes(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def needed_bytes(params: int, dtype: torch.dtype) -> int:
    """What a cell needs on the device for a model of ``params`` parameters in ``dtype``."""
    weights = params * dtype_bytes(dtype) * COPIES_HELD
    return int(weights * (1 + HEADROOM_FRACTION)) + HEADROOM_BYTES


def count_params(make_model) -> int | None:
    """Parameters of ``make_model()`` built on the meta device (shapes only, nothing allocated);
    None when the code cannot be built there (then the real build runs unguarded)."""
    try:
        with torch.device("meta"):
            model = make_model()
    except Exception:  # noqa: BLE001 - e.g. code that reads tensor values in __init__
        return None
    return sum(p.numel() for p in model.parameters())


def free_bytes(device: str) -> int | None:
    """Free memory of the current CUDA device; None on the CPU."""
    if not str(device).startswith("cuda"):
        return None
    free, _total = torch.cuda.mem_get_info()
    return int(free)


def too_large(count, dtype: torch.dtype, device: str) -> str | None:
    """The skip reason when a model does not fit the GPU's free memory, or None. ``count()`` gives
    its parameters (None: unknown); called only on a GPU, where the answer matters."""
    free = free_bytes(device)
    if free is None:
        return None
    params = count()
    if params is None:
        return None
    need = needed_bytes(params, dtype)
    if need <= free:
        return None
    return (f"too large for one GPU: {params:,} parameters in {str(dtype).removeprefix('torch.')} need about "
            f"{_gib(need)} ({COPIES_HELD} copies + activations), {gpu_name(device)} has {_gib(free)} free")


def _gib(n: int) -> str:
    return f"{n / 2 ** 30:.1f} GiB"


# ----------------------------------------------------------------------------- per cell
def gpu_name(device: str) -> str | None:
    if not str(device).startswith("cuda"):
        return None
    return torch.cuda.get_device_name()


def start_cell(device: str, pinned: tuple[int, str] | None = None) -> None:
    """Before a cell: make sure the worker is on its GPU and reset the peak-memory counter (peak
    memory is per cell). ``pinned``: pin_worker's answer. If the narrowed CUDA_VISIBLE_DEVICES did
    not take (CUDA was queried before it was set), this worker still sees every GPU: select its own."""
    if not str(device).startswith("cuda"):
        return
    if pinned is not None and torch.cuda.device_count() > 1 and torch.cuda.current_device() != pinned[0]:
        torch.cuda.set_device(pinned[0])
    torch.cuda.reset_peak_memory_stats()


def peak_mib(device: str) -> float | None:
    if not str(device).startswith("cuda"):
        return None
    return torch.cuda.max_memory_allocated() / 2 ** 20


def clean_device(device: str) -> None:
    """Free what a finished cell left on the GPU. pytest keeps the last failure in
    ``sys.last_*`` (for post-mortem debugging); its traceback holds the failed cell's tensors, so an
    out-of-memory error would otherwise poison every later cell."""
    if not str(device).startswith("cuda"):
        return
    for name in ("last_type", "last_value", "last_traceback", "last_exc"):
        if hasattr(sys, name):
            setattr(sys, name, None)
    gc.collect()
    torch.cuda.empty_cache()


def row_columns(device: str, details: dict | None, checkpoint) -> dict:
    """The columns a GPU run and a real checkpoint add to a cell's row (results.SCHEMA)."""
    details = details or {}
    return {
        "gpu_name": gpu_name(device), "gpu_peak_memory_mib": peak_mib(device),
        "train_tokens_per_s": details.get("tokens_per_s"),
        "checkpoint": getattr(checkpoint, "id", None), "checkpoint_revision": getattr(checkpoint, "revision", None),
    }
