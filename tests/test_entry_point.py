"""The pytest11 entry point: the matrix runs from another project (no copy of harness/ there), and the
auto-loaded entry point leaves unrelated pytest runs alone.

pytest finds entry points through installed distributions' metadata; the project's own venv may hold
an older install, so these runs see a distribution whose metadata declares exactly pyproject.toml's
entry point (read from the file), with this checkout first on the path. tests/test_wheel.py runs the
same thing from the built wheel.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
MATRIX_TEST = "from harness.test_matrix import test_cell, test_spec_file  # noqa: F401\n"


def pyproject_entry_points() -> dict:
    """name -> target of pyproject.toml's [project.entry-points.pytest11] (tomllib is 3.11+ only)."""
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.entry-points.pytest11]", 1)[1].split("\n[", 1)[0]
    return dict(re.findall(r'^(\w[\w.-]*)\s*=\s*"([^"]+)"', section, flags=re.M))


@pytest.fixture
def installed(tmp_path):
    """Environment for a subprocess that sees this checkout's harness with its entry point declared."""
    eps = pyproject_entry_points()
    assert eps == {"harness": "harness.pytest_entry"}
    dist = tmp_path / "site" / "prefix_compat_entry-0.0.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: prefix-compat-entry\nVersion: 0.0.0\n")
    (dist / "entry_points.txt").write_text("[pytest11]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PREFIX_COMPAT_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(tmp_path / "site")])
    env["HF_HUB_OFFLINE"] = "1"
    return env


def project(tmp_path, files: dict) -> Path:
    where = tmp_path / "elsewhere"
    for name, text in files.items():
        (where / name).parent.mkdir(parents=True, exist_ok=True)
        (where / name).write_text(text)
    return where


def pytest_run(where, env, *args, timeout=600):
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=where,
                          env=env, capture_output=True, text=True, timeout=timeout)


def rows(where, run_id):
    parts = sorted((where / "results" / "runs" / run_id).glob("*.parquet"))
    return pd.concat([pd.read_parquet(p) for p in parts]) if parts else pd.DataFrame()


def spec_folder():
    return {"my_specs/llama.yaml": (ROOT / "model_specs" / "llama.yaml").read_text()}


def test_auto_loaded_with_specs_runs_the_matrix_once_even_when_a_conftest_names_it_too(tmp_path, installed):
    where = project(tmp_path, {**spec_folder(), "test_matrix_here.py": MATRIX_TEST,
                               # a project that also lists the plugin itself must not get it twice
                               "conftest.py": 'pytest_plugins = ["harness.matrix.plugin"]\n'})
    out = pytest_run(where, installed, "--specs", "my_specs", "--adapters", "harness", "--checks", "accepts",
                     "--run-id", "auto", "--dtype", "float32", "--attn", "sdpa", "--no-mlp-variant", "-p", "no:xdist")
    assert out.returncode == 0, out.stdout + out.stderr
    got = rows(where, "auto")
    assert list(zip(got.model, got.adapter, got.check, got.status)) == [("llama", "harness", "accepts", "pass")]


def test_dash_p_harness_loads_it_with_autoloading_off(tmp_path, installed):
    where = project(tmp_path, {**spec_folder(), "test_matrix_here.py": MATRIX_TEST})
    env = {**installed, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    out = pytest_run(where, env, "-p", "harness", "--specs", "my_specs", "--adapters", "harness", "--checks",
                     "accepts,equivalence", "--run-id", "explicit", "--dtype", "float32", "--attn", "sdpa", "--no-mlp-variant")
    assert out.returncode == 0, out.stdout + out.stderr
    got = rows(where, "explicit")
    assert sorted(zip(got.check, got.status)) == [("accepts", "pass"), ("equivalence", "pass")]
    # control: the same run without the plugin named has no `cell` fixture and no --specs option
    out = pytest_run(where, env, "--specs", "my_specs")
    assert out.returncode != 0 and "--specs" in out.stderr


def test_an_unrelated_run_sees_nothing_of_it(tmp_path, installed):
    """The entry point is loaded (autoload), yet: the project's own --device/--seed options do not clash,
    neither torch nor the matrix is imported, and no run is written."""
    where = project(tmp_path, {
        "conftest.py": 'def pytest_addoption(parser):\n    parser.addoption("--device")\n    parser.addoption("--seed")\n',
        "test_unrelated.py": (
            "import sys\n"
            "def test_untouched(pytestconfig):\n"
            "    assert pytestconfig.pluginmanager.has_plugin('harness')  # the entry point is loaded\n"
            "    assert not pytestconfig.pluginmanager.has_plugin('harness.matrix.plugin')\n"
            "    assert 'torch' not in sys.modules and 'harness.matrix' not in sys.modules\n"
            "    assert pytestconfig.getoption('device') == 'cpu'\n"),
    })
    out = pytest_run(where, installed, "--device", "cpu", "--seed", "3")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 passed" in out.stdout
    assert not (where / "results").exists()
