"""The dtype / attention axes and the generated mlp variant: readable unique ids that keep today's
names for the default combination, skips (never errors) for what a model cannot run, the result
column and the report's pivot on it."""
import pandas as pd
import pytest
import torch

from harness.core.models import build_model
from harness.core.spec import SPEC_DIR, load_spec, load_specs_report
from harness.matrix import axes
from harness.matrix.cells import build_cells
from harness.reporting import report, results


def _cells(names, dtypes=("float32", "bfloat16"), attns=("eager", "sdpa")):
    specs = [load_spec(SPEC_DIR / f"{n}.yaml") for n in names]
    return axes.expand(build_cells(specs), list(dtypes), list(attns))


def test_default_combination_keeps_todays_ids_and_others_say_what_differs():
    ids = {c.id: c for c in _cells(["llama", "qwen"])}
    assert "llama-harness-equivalence" in ids and ids["llama-harness-equivalence"].attn == "sdpa"
    assert ids["llama-harness-equivalence"].row == "llama"
    bf16_eager = ids["llama-harness-equivalence-bf16-eager"]
    assert (bf16_eager.dtype, bf16_eager.attn, bf16_eager.row) == ("bfloat16", "eager", "llama-bf16-eager")
    assert "llama-harness-equivalence-sdpa" not in ids  # sdpa is llama's default: no suffix
    # our reference models pick their own attention: one cell per dtype, never an eager/sdpa copy
    qwen = [i for i in ids if i.startswith("qwen-harness-equivalence")]
    assert sorted(qwen) == ["qwen-harness-equivalence", "qwen-harness-equivalence-bf16"]
    assert {ids[i].attn for i in qwen} == {axes.OWN}


def test_ids_are_unique_over_every_spec():
    specs, _ = load_specs_report(None)
    cells = axes.expand(build_cells(specs), ["float32", "bfloat16", "float16"], ["eager", "sdpa", "flash_attention_2"])
    ids = [c.id for c in cells]
    assert len(ids) == len(set(ids))
    assert len({(c.row, c.code_source, c.adapter, c.check) for c in cells}) == len(cells)  # the results' cell key


def test_mlp_variant_rows_cover_gradients_train_and_save_load_of_the_harness_adapter():
    mlp = [c for c in _cells(["llama", "chatglm2"], dtypes=("float32",)) if c.variant.name == axes.MLP_VARIANT]
    assert {(c.spec.name, c.check) for c in mlp if c.attn in ("sdpa", axes.OWN)} == {
        (s, k) for s in ("llama", "chatglm2") for k in axes.MLP_CHECKS}
    assert {c.adapter for c in mlp} == {"harness"}
    assert all(c.variant.projection_dim >= 16 for c in mlp)


def test_dtype_and_attn_options():
    assert axes.parse_dtypes("auto", "cpu") == ["float32", "bfloat16"]
    assert axes.parse_dtypes(None, "cuda") == ["float32", "bfloat16", "float16"]
    assert axes.parse_dtypes("bfloat16,float32", "cpu") == ["bfloat16", "float32"]
    # real checkpoints load once, in bf16 on a GPU
    assert axes.parse_dtypes("auto", "cuda", real_checkpoints=True) == ["bfloat16"]
    assert axes.parse_dtypes(None, "cpu", real_checkpoints=True) == ["float32"]
    assert axes.parse_dtypes("float16", "cuda", real_checkpoints=True) == ["float16"]
    with pytest.raises(ValueError, match="--dtype: invalid choice 'bf16'"):
        axes.parse_dtypes("bf16", "cpu")
    with pytest.raises(ValueError, match="--attn: invalid choice 'flash'"):
        axes.parse_attn("eager,flash")


def test_what_a_model_cannot_run_is_a_skip_with_the_reason():
    cells = {c.id: c for c in _cells(["mpt", "llama"], dtypes=("float32",), attns=("eager", "sdpa", "flash_attention_2"))}
    assert "does not support attn_implementation='sdpa'" in axes.unsupported_reason(cells["mpt-harness-accepts-sdpa"], "cpu")
    assert axes.unsupported_reason(cells["mpt-harness-accepts"], "cpu") is None  # eager: mpt's default
    assert "CUDA" in axes.unsupported_reason(cells["llama-harness-accepts-flash_attention_2"], "cpu")


def test_set_attention_switches_the_implementation_and_keeps_the_weights():
    spec = load_spec(SPEC_DIR / "llama.yaml")
    sdpa = build_model(spec)
    eager = axes.set_attention(build_model(spec), "eager")
    assert (sdpa.config._attn_implementation, eager.config._attn_implementation) == ("sdpa", "eager")
    ids = torch.randint(0, 256, (2, 7))
    with torch.no_grad():
        a, b = sdpa(ids).logits, eager(ids).logits
    assert float((a - b).abs().max()) < 1e-4


def test_old_runs_read_with_a_default_attention_and_axis_rows_stay_apart(tmp_path):
    run = tmp_path / "runs" / "r1"
    base = {"run_id": "r1", "code_source": "transformers", "adapter": "harness", "check": "equivalence",
            "status": "pass", "finished_at": "2026-01-01T00:00:00+00:00", "family": "llama", "kv_layout": "b h s d",
            "concat_dim": 2, "nodeid": "x"}
    rows = [dict(base, model="llama", dtype="float32", attn_implementation="sdpa"),
            dict(base, model="llama-eager", dtype="float32", attn_implementation="eager"),
            dict(base, model="llama-bf16", dtype="bfloat16", attn_implementation="sdpa", status="fail")]
    results.write_atomically(rows, run / "part-new.parquet")
    old = results.normalise_row(dict(base, model="gpt2"))
    del old["attn_implementation"]
    run.mkdir(exist_ok=True)
    pd.DataFrame([old]).to_parquet(run / "part-old.parquet")
    df = results.read_run(run)
    assert len(df) == 4
    assert df.set_index("model")["attn_implementation"].to_dict() == {
        "llama": "sdpa", "llama-eager": "eager", "llama-bf16": "sdpa", "gpt2": results.ATTN_UNRECORDED}
    table = report.table([run], pivot="attn")
    assert "| llama | eager |" in table and "| llama | sdpa |" in table
    by_dtype = report.table([run], pivot="dtype")
    assert "| llama | bfloat16 |" in by_dtype and "FAIL" in by_dtype
