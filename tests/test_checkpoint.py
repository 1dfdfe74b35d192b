"""Prefix checkpoints: save_pretrained's safetensors + JSON, the older prefix.pt, and clear refusals."""
import json

import pytest
import torch
from safetensors.torch import load_file

import harness
from harness.core.checkpoint import CheckpointError
from harness.core.models import build_model
from harness.core.spec import SPEC_DIR, load_spec
from harness.matrix.oracle import full_context, real_prefix_kv


def model(name):
    return build_model(load_spec(SPEC_DIR / f"{name}.yaml"))


def planted(name, p=3, seed=0):
    base = model(name)
    pm = harness.prefix_tune(base, num_virtual_tokens=p)
    g = torch.Generator().manual_seed(seed)
    prefix, ids = torch.randint(0, 200, (p,), generator=g), torch.randint(0, 200, (1, 5), generator=g)
    pm.encoder.plant(real_prefix_kv(pm.contract, base, prefix, ids))
    return pm, base, prefix, ids


@pytest.mark.parametrize("name", ["llama", "qwen", "chatglm2"])
def test_save_pretrained_round_trips_to_the_real_tokens_logits(tmp_path, name):
    pm, base, prefix, ids = planted(name)
    pm.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "prefix_config.json").read_text())
    d = pm.contract.dims
    assert (cfg["spec"], cfg["layers"], cfg["heads"], cfg["head_dim"], cfg["num_virtual_tokens"]) == \
        (name, d.layers, d.heads, d.head_dim, 3)
    assert cfg["layout"] == str(pm.contract.layout) and cfg["projection_dim"] is None
    assert cfg["versions"]["torch"] == torch.__version__ and cfg["versions"]["transformers"]
    assert set(load_file(str(tmp_path / "prefix_model.safetensors"))) == {"embedding.weight"}
    again = harness.load_prefix(model(name), tmp_path)
    with torch.no_grad():
        want, _ = full_context(pm.contract, base, prefix, ids, torch.ones_like(ids))
        assert torch.equal(again(ids).logits, pm(ids).logits)
        torch.testing.assert_close(again(ids).logits, want, rtol=1e-4, atol=1e-5)


def test_a_projected_prefix_round_trips_with_its_mlp(tmp_path):
    pm = harness.prefix_tune(model("llama"), num_virtual_tokens=3, projection_dim=24)
    for p in pm.encoder.parameters():
        torch.nn.init.normal_(p, std=0.3)
    pm.save_pretrained(tmp_path)
    again = harness.load_prefix(model("llama"), tmp_path)
    ids = torch.randint(0, 200, (2, 5))
    assert again.encoder.projection_dim == 24
    with torch.no_grad():
        assert torch.equal(again(ids).logits, pm(ids).logits)


def test_the_older_prefix_pt_still_loads(tmp_path):
    pm, *_ , ids = planted("qwen")
    pm.save_prefix(tmp_path)
    assert not (tmp_path / "prefix_config.json").exists()
    again = harness.load_prefix(model("qwen"), tmp_path)
    with torch.no_grad():
        assert torch.equal(again(ids).logits, pm(ids).logits)


def test_damaged_checkpoints_name_the_file_and_field(tmp_path):
    pm, *_ = planted("llama")
    pm.save_pretrained(tmp_path)
    cfg_path, weights = tmp_path / "prefix_config.json", tmp_path / "prefix_model.safetensors"
    cfg = json.loads(cfg_path.read_text())

    def refused(pattern, target="llama"):
        with pytest.raises(CheckpointError, match=pattern):
            harness.load_prefix(model(target), tmp_path)

    refused(r"prefix_config.json: heads: the prefix was saved for heads=2, this model has 4", "qwen")
    cfg_path.write_text(json.dumps({k: v for k, v in cfg.items() if k != "num_virtual_tokens"}))
    refused(r"prefix_config.json: num_virtual_tokens: missing")
    cfg_path.write_text(json.dumps({**cfg, "layers": "two"}))
    refused(r"prefix_config.json: layers: expected a positive integer, got 'two'")
    cfg_path.write_text(json.dumps({**cfg, "spec": "no_such_model"}))
    refused(r"prefix_config.json: spec: no spec named 'no_such_model'")
    cfg_path.write_text(json.dumps({**cfg, "projection_dim": 8}))
    refused(r"prefix_config.json: tensors: missing \['mlp.0.bias'")
    cfg_path.write_text("{not json")
    refused(r"prefix_config.json: \(syntax\): not valid JSON")
    cfg_path.write_text(json.dumps(cfg))
    weights.write_bytes(weights.read_bytes()[:30])
    refused(r"prefix_model.safetensors: \(file\): not a readable safetensors file")
    weights.unlink()
    refused(r"prefix_model.safetensors: \(file\): missing")
    cfg_path.unlink()
    refused(r"\(folder\): holds neither")
    (tmp_path / "prefix.pt").write_bytes(b"garbage")
    refused(r"prefix.pt: \(file\): not a readable torch checkpoint")
