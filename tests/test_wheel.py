"""The wheel is complete: built from this checkout, installed into a fresh virtual environment outside
the repository, it finds its specs and tunes a tiny LLaMA, a Qwen v1 and a ChatGLM2 reference model,
saves and reloads the prefix, takes a user's spec file, and runs the matrix through its pytest11
entry point.

Nothing is downloaded: the wheel is built without build isolation and installed with --no-deps
--no-index; the fresh environment sees this venv's packages (torch, transformers, ...) through a .pth
file, after its own site-packages, so `harness` there is the installed wheel and nothing else.
"""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # about a minute: build, venv, three models, one matrix run

SCRIPT = r'''
import json, sys
from pathlib import Path
import torch
import harness
from harness.core.models import build_model
from harness.core.spec import SPEC_DIR, load_spec
from harness.matrix.oracle import full_context, real_prefix_kv

out = {"harness": harness.__file__, "spec_dir": str(SPEC_DIR), "specs": sorted(p.name for p in SPEC_DIR.glob("*.yaml"))}
for name in ("llama", "qwen", "chatglm2"):
    base = build_model(load_spec(SPEC_DIR / f"{name}.yaml"))
    pm = harness.prefix_tune(base, num_virtual_tokens=3)  # the spec found from model.config
    g = torch.Generator().manual_seed(0)
    prefix, ids = torch.randint(0, 200, (3,), generator=g), torch.randint(0, 200, (1, 5), generator=g)
    pm.encoder.plant(real_prefix_kv(pm.contract, base, prefix, ids))
    with torch.no_grad():
        want, _ = full_context(pm.contract, base, prefix, ids, torch.ones_like(ids))
        got = pm(ids).logits
        bare = base(input_ids=ids).logits
    pm.save_pretrained(Path(sys.argv[1]) / name)
    again = harness.load_prefix(build_model(load_spec(SPEC_DIR / f"{name}.yaml")), Path(sys.argv[1]) / name)
    with torch.no_grad():
        reloaded = again(ids).logits
    out[name] = {"spec": pm.spec.name, "err": float((got - want).abs().max() / want.abs().max()),
                 "bare_gap": float((bare - want).abs().max()), "reload_gap": float((reloaded - got).abs().max())}
user = harness.prefix_tune(build_model(load_spec(sys.argv[2])), num_virtual_tokens=2, spec=sys.argv[2])
out["user_spec"] = [user.spec.name, user.spec.path]
print("RESULT " + json.dumps(out))
'''


def run(cmd, **kwargs):
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kwargs)
    assert out.returncode == 0, f"{cmd}\n{out.stdout}\n{out.stderr}"
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel built from a copy of this checkout's files (the build writes build/ and egg-info
    into its source folder; the checkout stays clean)."""
    tmp = tmp_path_factory.mktemp("wheel")
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True)
    if listed.returncode == 0:
        for rel in filter(None, listed.stdout.split("\n")):
            if (ROOT / rel).is_file():
                (tmp / "src" / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / rel, tmp / "src" / rel)
    else:  # not a git checkout (an unpacked sdist): everything but environments and outputs
        shutil.copytree(ROOT, tmp / "src", ignore=shutil.ignore_patterns(
            ".git", ".venv", ".tox", "build", "dist", "*.egg-info", "__pycache__", "runs", "bench"))
    run([sys.executable, "-m", "pip", "wheel", tmp / "src", "--no-deps", "--no-build-isolation", "--no-index",
         "-q", "-w", tmp / "dist"])
    (found,) = (tmp / "dist").glob("prefix_compat-*.whl")
    return found


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory):
    """A fresh venv (outside the repository) with the wheel installed; returns its python."""
    where = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", "--without-pip", where / "env"])
    python = where / "env" / "bin" / "python"
    site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (site / "zz_host_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # -I: never touch the host's own (editable) install, which the .pth makes visible
    run([python, "-m", "pip", "install", "--no-deps", "--no-index", "-I", "-q", wheel], env=clean_env())
    return python


def clean_env():
    return {k: v for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith(("PYTEST_", "PREFIX_COMPAT_"))}


def test_the_wheel_holds_every_spec_package_and_the_entry_point(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for spec in (ROOT / "model_specs").glob("*.yaml"):
        assert f"harness/model_specs/{spec.name}" in names
    for init in (ROOT / "harness").rglob("__init__.py"):
        assert init.relative_to(ROOT).as_posix() in names, f"package {init.parent} missing from pyproject packages"
    (eps,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(eps).decode()
    assert "[pytest11]" in text and "harness = harness.pytest_entry" in text


def test_the_installed_wheel_tunes_llama_qwen_and_chatglm2(venv, tmp_path):
    user_spec = tmp_path / "user_specs" / "my_llama.yaml"
    user_spec.parent.mkdir()
    user_spec.write_text((ROOT / "model_specs" / "llama.yaml").read_text())
    script = tmp_path / "use_it.py"
    script.write_text(SCRIPT)
    out = run([venv, script, tmp_path / "saved", user_spec], cwd=tmp_path, env=clean_env())
    res = json.loads(out.stdout.split("RESULT ", 1)[1])
    site = venv.parent.parent
    assert Path(res["harness"]).is_relative_to(site) and Path(res["spec_dir"]).is_relative_to(site)
    assert res["specs"] == sorted(p.name for p in (ROOT / "model_specs").glob("*.yaml"))
    for name in ("llama", "qwen", "chatglm2"):
        r = res[name]
        assert r["spec"] == name
        assert r["err"] <= 1e-4, (name, r)  # the prefix of real tokens' K/V gives their full-context logits
        assert r["bare_gap"] > 1e-2, (name, r)  # control: without it the logits differ
        assert r["reload_gap"] == 0.0, (name, r)
        assert (tmp_path / "saved" / name / "prefix_model.safetensors").is_file()
    assert res["user_spec"] == ["my_llama", str(user_spec)]


def test_the_installed_entry_point_runs_the_matrix_from_another_project(venv, tmp_path):
    (tmp_path / "my_specs").mkdir()
    shutil.copy(ROOT / "model_specs" / "qwen.yaml", tmp_path / "my_specs" / "qwen.yaml")
    (tmp_path / "test_matrix_here.py").write_text("from harness.test_matrix import test_cell, test_spec_file  # noqa\n")
    run([venv, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", "--specs", "my_specs",
         "--adapters", "harness", "--checks", "equivalence", "--run-id", "from-wheel",
         "--dtype", "float32", "--attn", "sdpa", "--no-mlp-variant"], cwd=tmp_path, env=clean_env())
    rows = pd.concat(pd.read_parquet(p) for p in (tmp_path / "results" / "runs" / "from-wheel").glob("*.parquet"))
    assert sorted(zip(rows.model, rows.check, rows.status)) == [("qwen", "equivalence", "pass"),
                                                                ("qwen-unfixed", "equivalence", "xfail")]
