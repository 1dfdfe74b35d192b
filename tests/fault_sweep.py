"""A probe for tests/test_sweep.py that misbehaves on purpose: for model type ``crashes`` the worker
process dies (no Python exception to catch), for ``hangs`` it blocks SIGALRM and sleeps (a hang the
in-process time limit cannot interrupt). Every other type goes to the real probe."""
import os
import signal
import time


def probe(model_type: str):
    if model_type == "crashes":
        os._exit(3)
    if model_type == "hangs":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        time.sleep(600)
    from harness.probe import probe_model_type

    return probe_model_type(model_type)
