# The matrix's pytest plugin lives in harness/matrix/plugin.py; this makes `pytest harness/` load it, and
# the sweep plugin (--sweep: drafted specs of every causal-LM type, given to the matrix through its hook).
pytest_plugins = ["harness.matrix.plugin", "harness.probe.sweep_plugin"]
