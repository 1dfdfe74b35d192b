"""Hooks the matrix plugin offers to other plugins (registered in plugin.pytest_addhooks).

The probe layer's sweep plugin (harness/probe/sweep_plugin.py) implements the hook below, so the
matrix runs drafted specs without ever importing the probe.
"""
import pytest


@pytest.hookspec(firstresult=True)
def pytest_prefix_compat_specs(config):
    """The specs the matrix runs instead of the spec files (``--specs`` / model_specs/), or None to
    leave them. Called once per process (controller and each xdist worker) while the matrix is
    set up; every process must return the same specs (cells are collected in each)."""
