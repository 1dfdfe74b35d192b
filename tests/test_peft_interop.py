"""PEFT prefix-tuning adapters both ways: the logits stay identical across each conversion."""
import json

import pytest
import torch
from peft import PeftModel, PrefixTuningConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

import harness
from harness.core.checkpoint import CheckpointError
from harness.core.models import build_model
from harness.core.spec import SPEC_DIR, load_spec
from harness.matrix.oracle import real_prefix_kv

P = 3


def model(name):
    return build_model(load_spec(SPEC_DIR / f"{name}.yaml"))


def inputs(seed=0):
    return torch.randint(0, 200, (2, 6), generator=torch.Generator().manual_seed(seed))


def peft_model(name, projection: bool, seed=1):
    cfg = PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=P, prefix_projection=projection,
                             encoder_hidden_size=24 if projection else None)
    torch.manual_seed(seed)  # the prompt encoder's random start: a prefix that moves the logits
    return get_peft_model(model(name), cfg).eval()


def no_prefix_gap(name, ids, logits):
    with torch.no_grad():
        return float((model(name)(input_ids=ids).logits - logits).abs().max())


@pytest.mark.parametrize("projection", [False, True], ids=["table", "projection"])
@pytest.mark.parametrize("name", ["llama", "qwen1.5"])
def test_a_peft_adapter_becomes_a_prefix_model_with_identical_logits(tmp_path, name, projection):
    pe = peft_model(name, projection)
    ids = inputs()
    with torch.no_grad():
        want = pe(input_ids=ids).logits
    pe.save_pretrained(tmp_path)
    pm = harness.from_peft(model(name), tmp_path)
    with torch.no_grad():
        got = pm(ids).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert no_prefix_gap(name, ids, want) > 1e-2  # control: the prefix matters on these inputs


@pytest.mark.parametrize("projection", [False, True], ids=["table", "projection"])
@pytest.mark.parametrize("name", ["llama", "qwen1.5"])
def test_a_prefix_model_becomes_a_peft_adapter_peft_loads_with_identical_logits(tmp_path, name, projection):
    base = model(name)
    ids = inputs()
    if projection:
        torch.manual_seed(2)
        pm = harness.prefix_tune(base, num_virtual_tokens=P, projection_dim=24)
        for p in pm.encoder.parameters():  # a trained-looking MLP, not the near-zero start
            torch.nn.init.normal_(p, std=0.3)
    else:
        pm = harness.prefix_tune(base, num_virtual_tokens=P)
        pm.encoder.plant(real_prefix_kv(pm.contract, base, torch.randint(0, 200, (P,)), ids[:1]))
    with torch.no_grad():
        want = pm(ids).logits
    pm.to_peft(tmp_path)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "PREFIX_TUNING" and cfg["num_virtual_tokens"] == P
    pe = PeftModel.from_pretrained(model(name), tmp_path).eval()
    with torch.no_grad():
        got = pe(input_ids=ids).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert no_prefix_gap(name, ids, want) > 1e-2
    # and back: the adapter we wrote reads in again to the same prefix
    again = harness.from_peft(model(name), tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("target", ["chatglm2", "qwen"])
def test_a_peft_prefix_runs_on_a_model_with_another_cache_layout(tmp_path, target):
    """A PEFT adapter for LLaMA sizes on ChatGLM2 ([s, b, g, d], same sizes), and one for Qwen v1 sizes
    ([b, s, h, d]): the model receives exactly the K/V PEFT's get_prompt makes, in its own layout."""
    pe = peft_model("llama", projection=False) if target == "chatglm2" else None
    if pe is None:  # Qwen v1's sizes (4 KV heads of 16, 2 layers): a PEFT adapter on a LLaMA of those sizes
        spec = load_spec(SPEC_DIR / "llama.yaml")
        llama = LlamaForCausalLM(LlamaConfig(**{**spec.build.config, "num_key_value_heads": 4})).eval()
        torch.manual_seed(1)
        pe = get_peft_model(llama, PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=P)).eval()
    pe.save_pretrained(tmp_path)
    with torch.no_grad():
        prompt = pe.get_prompt(batch_size=1)  # per layer (k, v), each (1, H, P, D)
    pairs = [(layer[0], layer[1]) for layer in prompt] if not hasattr(prompt, "layers") else \
        [(layer.keys, layer.values) for layer in prompt.layers]
    want = torch.stack([torch.stack((k[0], v[0])) for k, v in pairs])  # (L, 2, H, P, D)
    base = model(target)
    pm = harness.from_peft(base, tmp_path)
    with torch.no_grad():
        fed = pm.contract.from_model_cache(pm.prefix_cache(1))[:, :, 0]  # (L, 2, H, P, D), read in its layout
        assert torch.equal(fed, want)
        ids = torch.randint(0, 200, (1, 5))
        # planted through the harness's own path (the matrix holds it to real-token logits)
        same = harness.prefix_tune(model(target), num_virtual_tokens=P)
        same.encoder.plant(want)
        torch.testing.assert_close(pm(ids).logits, same(ids).logits, rtol=0, atol=0)
        assert float((pm(ids).logits - base(input_ids=ids).logits).abs().max()) > 1e-2


def test_an_adapter_for_other_sizes_is_refused_naming_the_field(tmp_path):
    peft_model("llama", projection=False).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match=r"adapter_config.json: num_attention_heads: .*has num_attention_heads=2"):
        harness.from_peft(model("qwen"), tmp_path)  # Qwen v1: 4 KV heads


def test_damaged_adapters_are_refused_naming_file_and_field(tmp_path):
    peft_model("llama", projection=False).save_pretrained(tmp_path)
    cfg_path = tmp_path / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "peft_type": "LORA"}))
    with pytest.raises(CheckpointError, match="adapter_config.json: peft_type: 'LORA'"):
        harness.from_peft(model("llama"), tmp_path)
    cfg_path.write_text(json.dumps({**cfg, "num_virtual_tokens": 5}))
    with pytest.raises(CheckpointError, match=r"adapter_model.safetensors: prompt_embeddings: shape \(3, 128\)"):
        harness.from_peft(model("llama"), tmp_path)
    cfg_path.write_text(json.dumps(cfg))
    weights = tmp_path / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:40])
    with pytest.raises(CheckpointError, match=r"adapter_model.safetensors: \(file\): not readable"):
        harness.from_peft(model("llama"), tmp_path)
