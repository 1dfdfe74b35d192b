# The matrix's pytest plugin lives in harness/matrix/plugin.py; this makes `pytest harness/` load it.
pytest_plugins = ["harness.matrix.plugin"]
