"""ChatGLM's own P-Tuning v2 checkpoints: imported, they give the logits of the model's built-in
``pre_seq_len`` path. The checkpoints are written here in the ptuning scripts' format (the prefix
encoder's weights under ``transformer.prefix_encoder.``, ``config.json`` with ``pre_seq_len`` and
``prefix_projection``), from the reference models, which carry that built-in path."""
import json

import pytest
import torch

import harness
from harness.core.checkpoint import CheckpointError
from harness.core.inputs import make_inputs
from harness.core.models import build_model, resolve_class
from harness.core.spec import SPEC_DIR, load_spec

P = 3


def write_ptuning_checkpoint(name, projection: bool, directory, seed=5):
    """(base model, the same model with its built-in prefix, the folder written)."""
    spec = load_spec(SPEC_DIR / f"{name}.yaml")
    base = build_model(spec)
    config = resolve_class("reference", spec.build.config_class)(**spec.build.config, pre_seq_len=P,
                                                                  prefix_projection=projection)
    builtin = resolve_class("reference", spec.build.model_class)(config).eval()
    missing, unexpected = builtin.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("transformer.prefix_encoder.") for k in missing)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # a trained-looking prefix, not the init
        for p in builtin.transformer.prefix_encoder.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    state = {k: v for k, v in builtin.state_dict().items() if k.startswith("transformer.prefix_encoder.")}
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(state, directory / "pytorch_model.bin")
    (directory / "config.json").write_text(json.dumps({**spec.build.config, "pre_seq_len": P,
                                                       "prefix_projection": projection}))
    return spec, base, builtin


@pytest.mark.parametrize("projection", [False, True], ids=["table", "projection"])
@pytest.mark.parametrize("name", ["chatglm2", "chatglm3", "chatglm"])
def test_an_imported_checkpoint_gives_the_builtin_prefix_logits(tmp_path, name, projection):
    spec, base, builtin = write_ptuning_checkpoint(name, projection, tmp_path)
    g = torch.Generator().manual_seed(0)
    ids, mask = make_inputs(spec, base.config, 2, 7, g, "cpu", lengths=[7, 5])  # right-padded
    with torch.no_grad():
        want = builtin(input_ids=ids, attention_mask=None if name == "chatglm" else mask).logits
    pm = harness.from_chatglm_ptuning(base, tmp_path)
    assert pm.num_virtual_tokens == P and (pm.encoder.mlp is not None) == projection
    with torch.no_grad():
        got = pm(ids, attention_mask=mask).logits
        real = mask.bool()  # padding positions' logits are nobody's business
        torch.testing.assert_close(got[real], want[real], rtol=1e-5, atol=1e-5)
        # controls: without the prefix, or with the prefix at the harness's default positions, they differ
        bare = base(input_ids=ids, attention_mask=None if name == "chatglm" else mask).logits
        assert float((bare - want)[real].abs().max()) > 1e-2
        offset = harness.from_chatglm_ptuning(build_model(spec), tmp_path, prefix_positions="offset")
        assert float((offset(ids, attention_mask=mask).logits - want)[real].abs().max()) > 1e-3


def test_generation_follows_the_builtin_prefix(tmp_path):
    """Greedy tokens step by step equal the built-in model's run on the growing sequence."""
    spec, base, builtin = write_ptuning_checkpoint("chatglm2", False, tmp_path)
    pm = harness.from_chatglm_ptuning(base, tmp_path)
    ids, _ = make_inputs(spec, base.config, 1, 5, torch.Generator().manual_seed(1), "cpu")
    out = pm.generate(ids, max_new_tokens=4)
    seq = ids
    with torch.no_grad():
        for _ in range(4):
            nxt = builtin(input_ids=seq).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat((seq, nxt), dim=1)
    assert torch.equal(out, seq)


def test_the_import_saves_and_reloads_with_its_positions(tmp_path):
    spec, base, builtin = write_ptuning_checkpoint("chatglm2", True, tmp_path / "ptuning")
    pm = harness.from_chatglm_ptuning(base, tmp_path / "ptuning")
    pm.save_pretrained(tmp_path / "saved")
    meta = json.loads((tmp_path / "saved" / "prefix_config.json").read_text())
    assert meta["prefix_positions"] == "none" and meta["projection_dim"] == spec.build.config["hidden_size"]
    again = harness.load_prefix(build_model(spec), tmp_path / "saved")
    ids, mask = make_inputs(spec, base.config, 1, 6, torch.Generator().manual_seed(2), "cpu")
    with torch.no_grad():
        assert torch.equal(again(ids).logits, pm(ids).logits)
        torch.testing.assert_close(again(ids).logits, builtin(input_ids=ids).logits, rtol=1e-5, atol=1e-5)


def test_bad_checkpoints_are_refused_naming_file_and_field(tmp_path):
    spec, base, builtin = write_ptuning_checkpoint("chatglm2", False, tmp_path)
    with pytest.raises(ValueError, match="built with pre_seq_len=3"):  # it would widen the mask a second time
        harness.from_chatglm_ptuning(builtin, tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "pre_seq_len": 8}))
    with pytest.raises(CheckpointError, match=r"config.json: pre_seq_len: 8, the weights hold 3"):
        harness.from_chatglm_ptuning(base, tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "prefix_projection": True}))
    with pytest.raises(CheckpointError, match=r"config.json: prefix_projection: True"):
        harness.from_chatglm_ptuning(base, tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"pytorch_model.bin: transformer.prefix_encoder.\*: shapes"):
        harness.from_chatglm_ptuning(build_model(load_spec(SPEC_DIR / "chatglm.yaml")), tmp_path)  # 4 heads, not 2
    torch.save({"lm_head.weight": torch.zeros(2, 2)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"pytorch_model.bin: transformer.prefix_encoder.embedding.weight"):
        harness.from_chatglm_ptuning(base, tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"pytorch_model.bin: \(file\): not readable"):
        harness.from_chatglm_ptuning(base, tmp_path)
