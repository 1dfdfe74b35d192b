"""The benchmarks run and end with their machine-readable lines (the figures themselves are the
benchmark's to report, not a test's to assert: they depend on the machine)."""
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

import benchmarks
from benchmarks import train_step
from harness.core.inputs import make_inputs
from harness.core.spec import SPEC_DIR, load_spec

ROOT = Path(__file__).resolve().parent.parent


def _last_line(module: str) -> str:
    out = subprocess.run([sys.executable, "-m", module, "--quick", "--no-save"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


def test_train_step_quick_ends_with_the_ratios_line():
    line = _last_line("benchmarks.train_step")
    m = benchmarks.LAST_LINE_PATTERNS["train_step"].match(line)
    assert m, line
    assert m.group(2) != "n/a" and m.group(3) != "n/a", f"PEFT runs LLaMA, so its ratios exist: {line}"


def test_matrix_quick_ends_with_the_matrix_line():
    line = _last_line("benchmarks.matrix")
    assert benchmarks.LAST_LINE_PATTERNS["matrix"].match(line), line


@pytest.mark.parametrize("line, ok", [
    ("ratios harness/limit=1.004 harness/peft=0.981 mem harness/peft=0.950", True),
    ("ratios harness/limit=1.004 harness/peft=n/a mem harness/peft=n/a", True),
    ("ratios harness/limit=n/a harness/peft=0.981 mem harness/peft=0.950", False),  # the limit always runs
    ("ratios harness/limit=1.004 harness/peft=0.981", False),
])
def test_the_train_step_line_pattern_accepts_only_the_documented_form(line, ok):
    assert bool(benchmarks.LAST_LINE_PATTERNS["train_step"].match(line)) is ok


def test_pairwise_median_is_the_median_of_step_ratios():
    # Step ratios 2.0, 1.0, 1.5: median 1.5 (the ratio of medians would be 4 / 3).
    assert benchmarks.pairwise_median([4.0, 3.0, 3.0], [2.0, 3.0, 2.0]) == 1.5
    with pytest.raises(ValueError, match="equally long"):
        benchmarks.pairwise_median([1.0], [1.0, 2.0])


@pytest.mark.parametrize("name", ["llama", "qwen", "chatglm2"])
def test_spec_models_scale_to_the_benchmark_sizes(name):
    spec = load_spec(SPEC_DIR / f"{name}.yaml")
    sizes = train_step.Sizes(layers=3, hidden=96, heads=6, seq=40, batch=2, prefix=4)
    model, dims = train_step.build(spec, sizes, "cpu", torch.float32)
    tiny_heads = [v for k, v in spec.build.config.items() if k in train_step.HEAD_KEYS][0]
    tiny_kv = [v for k, v in spec.build.config.items() if k in train_step.KV_HEAD_KEYS]
    assert (dims.layers, dims.head_dim) == (3, 16)
    assert dims.heads == (tiny_kv[0] * 6 // tiny_heads if tiny_kv else 6)  # the KV:query ratio is kept
    assert all(not p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("name", ["llama", "qwen"])
def test_the_limit_computes_what_the_harness_computes(name):
    """The limit is the harness without its encoder: with the encoder's K/V as its leaf it gives the
    same loss, so the timing ratio compares like with like."""
    spec = load_spec(SPEC_DIR / f"{name}.yaml")
    sizes = train_step.Sizes(layers=2, hidden=64, heads=4, seq=12, batch=2, prefix=3)
    model, _ = train_step.build(spec, sizes, "cpu", torch.float32)
    ids, mask = make_inputs(spec, model.config, 2, 12, torch.Generator().manual_seed(0), "cpu")
    variants, skipped = train_step.make_variants(["limit", "harness"], model, spec, 3)
    limit, harness_ = variants
    with torch.no_grad():
        limit.kv.copy_(harness_.pm.encoder(1))
    torch.testing.assert_close(limit.loss(ids, mask), harness_.loss(ids, mask), rtol=0, atol=0)
    assert skipped == {}


def test_peft_is_not_applicable_where_the_spec_declares_it_failing():
    spec = load_spec(SPEC_DIR / "qwen.yaml")
    model, _ = train_step.build(spec, train_step.Sizes(layers=1, hidden=32, heads=2, seq=8, prefix=2), "cpu",
                                torch.float32)
    variants, skipped = train_step.make_variants(["harness", "peft"], model, spec, 2)
    assert [v.name for v in variants] == ["harness"]
    assert "spec declares" in skipped["peft"]


def test_results_are_appended_as_new_parquet_files(tmp_path, monkeypatch):
    monkeypatch.setattr(benchmarks, "RESULTS", tmp_path)
    first = benchmarks.append_parquet("train_step", [{"variant": "harness", "median_step_s": 0.5}])
    second = benchmarks.append_parquet("train_step", [{"variant": "limit", "median_step_s": 0.4}])
    assert first != second
    assert list(pd.read_parquet(first)["variant"]) == ["harness"]
