"""GPUs without a GPU: one worker per GPU (worker i on GPU i mod N) with a fake device count, the
skip of a model too large for the free memory, an out-of-memory cell that becomes an error row
while the next cell runs, and the device cleaned after a cell."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from transformers import LlamaForCausalLM

from harness.core.models import build_model
from harness.core.spec import load_spec
from harness.matrix import devices, plugin
from harness.reporting import results

ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- worker -> GPU
def test_worker_i_uses_gpu_i_mod_n():
    assert [devices.assigned_gpu(f"gw{i}", 2) for i in range(6)] == [0, 1, 0, 1, 0, 1]
    assert [devices.assigned_gpu(f"gw{i}", 3) for i in range(4)] == [0, 1, 2, 0]
    with pytest.raises(ValueError):
        devices.assigned_gpu("gw0", 0)
    with pytest.raises(ValueError, match="xdist worker"):
        devices.worker_index("main")


def test_pinning_narrows_cuda_visible_devices_within_an_existing_allocation(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    env = {}
    assert devices.pin_worker("gw3", 2, env) == (1, "CUDA_VISIBLE_DEVICES=1") and env == {"CUDA_VISIBLE_DEVICES": "1"}
    env = {"CUDA_VISIBLE_DEVICES": "4,5,6"}  # e.g. what Slurm allotted this job
    assert devices.pin_worker("gw4", 3, env)[0] == 1 and env["CUDA_VISIBLE_DEVICES"] == "5"


def test_pinning_after_cuda_started_selects_the_device_instead(monkeypatch):
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    env = {}
    assert devices.pin_worker("gw5", 4, env) == (1, "torch.cuda.set_device(1)") and chosen == [1] and env == {}


def test_n_auto_means_one_worker_per_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    config = SimpleNamespace(option=SimpleNamespace(models=None, device="cuda"))
    assert plugin.pytest_xdist_auto_num_workers(config) == 4
    config.option.device = "auto"
    assert plugin.pytest_xdist_auto_num_workers(config) == 4
    monkeypatch.setenv("PYTEST_XDIST_AUTO_NUM_WORKERS", "3")  # the user's own choice wins
    assert plugin.pytest_xdist_auto_num_workers(config) is None
    monkeypatch.delenv("PYTEST_XDIST_AUTO_NUM_WORKERS")
    config.option.device = "cpu"
    assert plugin.pytest_xdist_auto_num_workers(config) is None  # xdist's own CPU count
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config.option.device = "auto"
    assert plugin.pytest_xdist_auto_num_workers(config) is None


FAKE_GPUS = textwrap.dedent('''
    """Loaded with -p: the controller believes it has 3 GPUs; each worker writes what it was given."""
    import os
    from pathlib import Path

    from harness.matrix import devices

    devices.gpu_count = lambda: 3
    devices.wants_cuda = lambda option: True


    def pytest_sessionfinish(session):
        wi = getattr(session.config, "workerinput", None)
        if wi is not None:
            out = Path(os.environ["FAKE_GPU_OUT"]) / wi["workerid"]
            out.write_text(os.environ.get("CUDA_VISIBLE_DEVICES", "unset"))
''')


def test_n_auto_with_a_fake_device_count_starts_a_worker_per_gpu_each_on_its_own(tmp_path):
    (tmp_path / "fake_gpus.py").write_text(FAKE_GPUS)
    out = tmp_path / "seen"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "FAKE_GPU_OUT": str(out), "CUDA_VISIBLE_DEVICES": "5,6,7"}
    # --device auto resolves to the CPU here (torch sees no CUDA), so the cells really run.
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "fake_gpus", "-n", "auto",
           str(ROOT / "harness"), "--models", "llama", "--adapters", "harness", "--checks", "accepts,equivalence,save_load",
           "--results-dir", str(tmp_path / "results"), "--run-id", "gpus", "--dtype", "float32", "--attn", "sdpa", "--no-mlp-variant"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    seen = {p.name: p.read_text() for p in out.iterdir()}
    assert seen == {"gw0": "5", "gw1": "6", "gw2": "7"}  # 3 workers; worker i on the i-th allotted GPU
    df = results.read_run(results.runs_root(tmp_path / "results") / "gpus")
    assert set(df["status"]) == {"pass"} and len(df) == 3


# ----------------------------------------------------------------------------- memory
def test_a_model_larger_than_the_free_memory_is_skipped_with_both_figures(monkeypatch):
    monkeypatch.setattr(devices, "free_bytes", lambda device: 40 * 2 ** 30)
    monkeypatch.setattr(devices, "gpu_name", lambda device: "NVIDIA H100 80GB HBM3")
    reason = devices.too_large(lambda: 70_000_000_000, torch.bfloat16, "cuda")
    assert "70,000,000,000 parameters in bfloat16" in reason and "40.0 GiB free" in reason and "H100" in reason
    need = devices.needed_bytes(70_000_000_000, torch.bfloat16)
    assert f"{need / 2 ** 30:.1f} GiB" in reason and need > 2 * 70e9 * 2  # two copies of 2-byte weights, plus room
    assert devices.too_large(lambda: 7_000_000, torch.bfloat16, "cuda") is None  # a small model fits
    monkeypatch.undo()
    assert devices.too_large(lambda: 70_000_000_000, torch.bfloat16, "cpu") is None  # the CPU is not measured here


def test_parameters_are_counted_on_the_meta_device_without_building():
    spec = load_spec(ROOT / "model_specs" / "llama.yaml")
    real = sum(p.numel() for p in build_model(spec).parameters())
    from harness.matrix.cells import build_cells
    from harness.matrix.checkpoints import count_params

    cell = build_cells([spec], "harness", "accepts")[0]
    assert count_params(cell) == real
    assert devices.count_params(lambda: (_ for _ in ()).throw(RuntimeError("needs real tensors"))) is None


def test_cleaning_drops_the_failed_cells_traceback_and_empties_the_cache(monkeypatch):
    emptied = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    monkeypatch.setattr(sys, "last_value", RuntimeError("CUDA out of memory"), raising=False)
    devices.clean_device("cpu")
    assert emptied == [] and sys.last_value is not None  # nothing to do on the CPU
    devices.clean_device("cuda")
    assert emptied == [True] and sys.last_value is None


def test_rows_get_gpu_and_checkpoint_columns_and_older_runs_read_them_as_null():
    ckpt = SimpleNamespace(id="meta-llama/Llama-2-7b-hf", revision="01c7f73d771dfac7d292323805ebc428287df4f9")
    cols = devices.row_columns("cpu", {"tokens_per_s": 1234.5}, ckpt)
    assert cols == {"gpu_name": None, "gpu_peak_memory_mib": None, "train_tokens_per_s": 1234.5,
                    "checkpoint": ckpt.id, "checkpoint_revision": ckpt.revision}
    assert set(cols) <= set(results.COLUMNS) and "shard" in results.COLUMNS
    old = results.read_run(ROOT / "results" / "baseline")  # written before these columns existed
    assert len(old) and old["gpu_name"].isna().all() and old["train_tokens_per_s"].isna().all()


# ----------------------------------------------------------------------------- out of memory
class OomOnceLM(LlamaForCausalLM):
    """Raises CUDA's out-of-memory error on the first forward in its process, then works."""

    raised = False

    def forward(self, *args, **kwargs):
        if not OomOnceLM.raised:
            OomOnceLM.raised = True
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return super().forward(*args, **kwargs)


FAKE_FREE_MEMORY = textwrap.dedent('''
    """Loaded with -p: every device reports 80 GiB free, and the spec 'huge' has a trillion parameters."""
    from harness.matrix import checkpoints, devices

    devices.free_bytes = lambda device: 80 * 2 ** 30
    devices.gpu_name = lambda device: "Fake GPU"
    devices.clean_device = lambda device, _real=devices.clean_device: _real("cuda")  # clean as on a GPU
    checkpoints.count_params = lambda cell: 10 ** 12 if cell.spec.name == "huge" else None
''')


def test_too_large_is_a_skip_and_out_of_memory_an_error_row_while_the_next_cell_runs(tmp_path):
    spec = yaml.safe_load((ROOT / "model_specs" / "llama.yaml").read_text())
    spec["expected_failures"] = [{"adapter": "*", "check": "*", "reason": "declared: never covers memory errors"}]
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "huge.yaml").write_text(yaml.safe_dump(spec))
    spec["build"].update(code_source="reference",
                         **{"class": "test_devices:OomOnceLM", "config_class": "transformers:LlamaConfig"})
    (tmp_path / "specs" / "oom.yaml").write_text(yaml.safe_dump(spec))
    (tmp_path / "fake_free_memory.py").write_text(FAKE_FREE_MEMORY)
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{tmp_path}", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "fake_free_memory", "-n", "0",
           str(ROOT / "harness"), "--specs", str(tmp_path / "specs"), "--adapters", "harness",
           "--checks", "accepts,equivalence", "--results-dir", str(tmp_path / "results"), "--run-id", "mem"]
    subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    df = results.read_run(results.runs_root(tmp_path / "results") / "mem").set_index(["model", "check"])
    for check in ("accepts", "equivalence"):  # skipped with the measured figures, not an error or an xfail
        assert df.loc[("huge", check), "status"] == "skip"
        assert "1,000,000,000,000 parameters" in df.loc[("huge", check), "message"]
        assert "Fake GPU has 80.0 GiB free" in df.loc[("huge", check), "message"]
    assert df.loc[("oom", "accepts"), "status"] == "error"  # a declared failure never covers memory
    assert "OutOfMemoryError: CUDA out of memory" in df.loc[("oom", "accepts"), "message"]
    assert df.loc[("oom", "equivalence"), "status"] == "xpass"  # the next cell ran and measured


# ----------------------------------------------------------------------------- the prepared GPU check
def test_the_gpu_checks_real_size_specs_load_and_have_their_published_sizes(tmp_path):
    from benchmarks import gpu_check
    from harness.core.spec import load_specs_report
    from harness.matrix.cells import build_cells
    from harness.matrix.checkpoints import count_params

    gpu_check.write_specs(tmp_path)
    specs, errors = load_specs_report([str(tmp_path)])
    assert errors == [] and sorted(s.name for s in specs) == sorted([*gpu_check.REAL_SIZES, "llama70b"])
    billions = {s.name: count_params(build_cells([s], "harness", "accepts")[0]) / 1e9 for s in specs}
    assert round(billions["llama"], 2) == 6.74 and round(billions["chatglm2"], 2) == 6.24  # Llama-2-7B, ChatGLM2-6B
    assert all(5.5 < b < 8 for name, b in billions.items() if name != "llama70b")
    # 70B in bfloat16, two copies: more than any single GPU has, so the check expects a skip
    assert devices.needed_bytes(int(billions["llama70b"] * 1e9), torch.bfloat16) > 200 * 2 ** 30
