# The matrix's pytest plugin lives in harness/pytest_plugin.py; this makes `pytest harness/` load it.
pytest_plugins = ["harness.pytest_plugin"]
