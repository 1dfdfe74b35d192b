import sys
from pathlib import Path

# Shared helpers of the tests (remote_code.py) import by plain name.
sys.path.insert(0, str(Path(__file__).resolve().parent))


def pytest_configure(config):
    """Under xdist, one torch thread per worker: two workers with two threads each on two cores
    spin-wait against each other (the matrix's plugin does the same for its workers)."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        import os

        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(workerinput.get("workercount", 1))))
