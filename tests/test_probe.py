"""The probe rediscovers, from tiny models alone, the kv and cache sections written by hand in
model_specs/, and says n/a or what blocked it instead of guessing."""
import hashlib
import json
import subprocess
import warnings

import pytest

from harness.core.expr import ConfigExpr, first_applicable
from harness.core.layout import Layout
from harness.core.models import resolve_class
from harness.core.spec import SPEC_DIR, build_config, load_spec
from harness.probe import probe_classes, probe_code_dir, probe_model_type
from harness.probe.pick import load_draft

warnings.filterwarnings("ignore")

REFERENCES = {"qwen": ("harness.reference.qwen:QWenLMHeadModel", "harness.reference.qwen:QWenConfig"),
              "chatglm2": ("harness.reference.chatglm2:ChatGLMForConditionalGeneration",
                           "harness.reference.chatglm2:ChatGLMConfig")}


def _sizes(exprs, config):
    return first_applicable(tuple(ConfigExpr.parse(x) for x in exprs), config)


def assert_rediscovers(result, spec_name):
    """kv and cache of the probe's draft equal the hand-written spec's, evaluated on the spec's config."""
    spec = load_spec(SPEC_DIR / f"{spec_name}.yaml")
    kv = result.kv
    assert kv is not None, result.reason
    assert Layout.parse(kv.layout).axes == spec.kv.layout.axes
    assert kv.concat_axis == spec.kv.concat_axis
    assert kv.container == spec.cache.container
    drafted = load_draft(result.draft)
    assert drafted.cache.argument == spec.cache.argument
    config = build_config(spec)  # the spec's own tiny config: both sets of expressions must read it alike
    for field in ("layers", "heads", "head_dim"):
        want = first_applicable(getattr(spec.kv, field), config)
        assert _sizes(getattr(kv, field), config) == want, (field, getattr(kv, field), [str(x) for x in getattr(spec.kv, field)])
    assert [str(x) for x in spec.kv.heads][0] == str(kv.heads[0])
    return drafted


@pytest.mark.parametrize("model_type,spec_name", [("llama", "llama"), ("qwen2", "qwen1.5")])
def test_native_specs_rediscovered(model_type, spec_name):
    result = probe_model_type(model_type)
    assert result.status == "ok", result.reason
    drafted = assert_rediscovers(result, spec_name)
    # the spec's own conventions: positions passed and counted over real tokens (left padding = unpadded)
    assert (drafted.conventions.attention_mask, drafted.conventions.position_ids) == ("extend_2d", "explicit_offset")
    assert drafted.num_virtual_tokens.evaluate(build_config(drafted)) != 4  # never P == KV/query heads
    assert any(t.passed for t in result.trials) and not all(t.passed for t in result.trials)


@pytest.mark.parametrize("spec_name", sorted(REFERENCES))
def test_reference_models_rediscovered(spec_name):
    spec = load_spec(SPEC_DIR / f"{spec_name}.yaml")
    model_class, config_class = REFERENCES[spec_name]
    result = probe_classes(resolve_class("reference", config_class), resolve_class("reference", model_class),
                           target=spec_name, model_type=spec.match_model_types[0], code_source="reference",
                           class_names=(model_class, config_class), config_json=dict(spec.build.config))
    assert_rediscovers(result, spec_name)
    if spec_name == "chatglm2":  # positions restart at 0 behind a past: only explicit offsets reproduce
        assert result.status == "ok"
        assert result.conventions == ("extend_2d", "explicit_offset")
    else:  # Qwen v1 (Dec-2023) drops its causal mask behind a past: no convention can reproduce that
        assert result.status == "probe-failed"
        assert "no (attention_mask, position_ids) candidate reproduces" in result.reason
        assert min(t.error for t in result.trials if t.error is not None) > 1e-2


@pytest.mark.parametrize("model_type,layout,heads", [
    ("gpt2", ["b", "h", "s", "d"], "n_head"),
    ("falcon", ["b", "h", "s", "d"], "1 if multi_query"),      # num_kv_heads says 2; the cache holds 1
    ("gpt_bigcode", ["b", "h", "s", "d"], "1 if multi_query"),
])
def test_layouts_and_multi_query(model_type, layout, heads):
    result = probe_model_type(model_type)
    assert result.status == "ok", result.reason
    assert result.kv.layout == layout and str(result.kv.heads[0]) == heads
    spec = load_draft(result.draft)
    config = build_config(spec)
    assert first_applicable(spec.kv.heads, config) == result.kv.k_shape[result.kv.layout.index("h")]
    if heads.startswith("1 if"):
        assert result.kv.k_shape[1] == 1


def test_no_kv_cache_is_na():
    result = probe_model_type("mamba")
    assert result.status == "n/a" and "no attention K/V" in result.reason
    assert "not_applicable:" in result.yaml and "kv:" not in result.yaml  # an n/a spec (tests/test_not_applicable.py)


def test_not_a_causal_lm_and_unknown_type():
    assert probe_model_type("vit").status == "n/a"
    unknown = probe_model_type("no_such_model")
    assert unknown.status == "probe-failed" and "no model type" in unknown.reason


def test_code_dir_pins_the_code(tmp_path):
    """A remote-code folder (here one re-exporting our ChatGLM2 reference model): the draft pins the
    sha256 of its code and the git commit, keeps the family's reference build, and loads."""
    (tmp_path / "configuration_glm.py").write_text("from harness.reference.chatglm2 import ChatGLMConfig\n")
    (tmp_path / "modeling_glm.py").write_text(
        "from harness.reference.chatglm2 import ChatGLMForConditionalGeneration\n")
    spec = load_spec(SPEC_DIR / "chatglm2.yaml")
    config = {**spec.build.config, "model_type": "chatglm", "_name_or_path": "someone/glm-new",
              "num_layers": 28, "hidden_size": 4096, "num_attention_heads": 32, "kv_channels": 128,
              "auto_map": {"AutoConfig": "configuration_glm.ChatGLMConfig",
                           "AutoModel": "modeling_glm.ChatGLMForConditionalGeneration"}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    refused = probe_code_dir(tmp_path)
    assert refused.status == "probe-failed" and "trust-remote-code" in refused.reason

    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-qm", "code"], check=True)
    head = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()

    result = probe_code_dir(tmp_path, trust_remote_code=True)
    assert result.status == "ok", result.reason
    remote = result.draft["remote"]
    assert remote["repo"] == "someone/glm-new" and remote["revision"] == head
    assert remote["auto_class"] == "AutoModel"
    assert remote["sha256"] == {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.glob("*.py")}
    assert result.kv.layout == ["s", "b", "h", "d"] and result.conventions == ("extend_2d", "explicit_offset")
    drafted = load_draft(result.draft)
    assert drafted.remote.revision == head and drafted.build.code_source == "reference"
    own = next(line for line in result.yaml.splitlines() if "tiny config for this revision" in line)
    assert '"num_layers": 2' in own  # the sizes the folder's own code was measured with, as the note says


def test_a_match_counts_only_when_the_prefix_matters():
    from harness.probe.pick import Trial

    assert Trial("extend_2d", "model_continues", 0.0, control=0.5).passed
    assert not Trial("extend_2d", "model_continues", 0.0, control=0.0).passed  # logits ignore the prefix
    assert not Trial("extend_2d", "model_continues", 2e-4, control=0.5).passed
    assert not Trial("extend_2d", "model_continues", None, "TypeError").passed


def test_mla_draft_carries_v_head_dim():
    """DeepSeek-V3 caches a latent: K's last dim is kv_lora_rank, V's the rotary head dim. The probe
    traces them separately and writes kv.v_head_dim; until the spec format knows that field the
    status says so (never a silent draft that drops V's size)."""
    from harness.probe import spec_knows_v_head_dim

    result = probe_model_type("deepseek_v3")
    kv = result.kv
    assert kv is not None, result.reason
    k_d, v_d = kv.k_shape[kv.layout.index("d")], kv.v_shape[kv.layout.index("d")]
    assert k_d != v_d  # the tiny config keeps every size apart: 24 (kv_lora_rank) vs 8 (qk_rope_head_dim)
    cfg = resolve_class("transformers", "DeepseekV3Config")(**result.draft["build"]["config"])
    assert _sizes(kv.head_dim, cfg) == cfg.kv_lora_rank == k_d
    assert _sizes(kv.v_head_dim, cfg) == cfg.qk_rope_head_dim == v_d
    assert result.draft["kv"]["v_head_dim"] in ("head_dim", "qk_rope_head_dim")
    if not spec_knows_v_head_dim():
        assert result.status == "probe-failed" and "kv.v_head_dim" in result.reason and "does not" in result.reason
        pytest.skip("harness.core.spec has no kv.v_head_dim yet: the measured part of this test waits for it")
    assert result.status == "ok", result.reason
    spec = load_draft(result.draft)
    assert first_applicable(spec.kv.v_head_dim, build_config(spec)) == v_d


def test_composite_config_sizes_are_dotted():
    """Gemma 3's causal-LM class is the multimodal one: its sizes live in text_config, and the draft
    names them by dotted paths that load and evaluate to the cache's sizes."""
    result = probe_model_type("gemma3")
    assert result.status == "ok", result.reason
    kv = result.kv
    assert str(kv.heads[0]) == "text_config.num_key_value_heads" and str(kv.layers[0]) == "text_config.num_hidden_layers"
    spec = load_draft(result.draft)
    config = build_config(spec)
    assert first_applicable(spec.kv.heads, config) == kv.k_shape[kv.layout.index("h")] == config.text_config.num_key_value_heads
    assert first_applicable(spec.kv.head_dim, config) == kv.k_shape[kv.layout.index("d")]
    assert first_applicable(spec.kv.layers, config) == config.text_config.num_hidden_layers


@pytest.mark.parametrize("model_type", ["qwen3_next", "falcon_h1"])
def test_hybrid_is_na_with_a_measurement(model_type):
    """Hybrids: a real-token prefix on the attention layers alone is measured against the full context
    (and the model's own full cache, which must continue exactly): n/a with the figures, never probe-failed."""
    result = probe_model_type(model_type)
    assert result.status == "n/a", result.summary()
    assert result.reason.startswith("hybrid") and "relative error" in result.reason
    trial = result.hybrid
    assert trial.whole is not None and trial.whole <= 1e-4  # the model continues its own cache exactly
    assert trial.attention_only is not None and trial.attention_only > 1e-4  # the K/V alone do not
    assert result.attention_layers


def test_attention_layers_container_plants_only_attention_layers():
    import torch
    from transformers import Qwen3NextConfig

    from harness.core.containers import attention_layers as hybrid

    config = Qwen3NextConfig(num_hidden_layers=2, layer_types=["linear_attention", "full_attention"])
    k, v = torch.randn(1, 2, 3, 16), torch.randn(1, 2, 3, 16)
    cache = hybrid.pack([(k, v)], config, [1])
    assert hybrid.attention_indices(cache) == [1]
    (got_k, got_v), = hybrid.unpack(cache)
    assert torch.equal(got_k, k) and torch.equal(got_v, v)
    with pytest.raises(ValueError, match="holds no attention K/V"):
        hybrid.pack([(k, v)], config, [0])
    with pytest.raises(TypeError, match="needs the model config"):
        hybrid.pack([(k, v)])


def test_a_forward_that_needs_other_inputs_is_na():
    result = probe_model_type("xmod")  # an encoder stack with language adapters: needs a language id
    assert result.status == "n/a" and "needs other inputs" in result.reason and "language" in result.reason


def test_shrink_repairs_measured():
    # xLSTM: second size names tied and hidden doubled (qk_dim rounds up to 64); then measured: no per-layer K/V
    xlstm = probe_model_type("xlstm")
    assert xlstm.status == "n/a" and "no per-layer keys/values" in xlstm.reason
    # Cohere Compass: per-kind rope_parameters the class leaves {}; MusicGen: one row per codebook group
    for model_type, note in (("cohere_compass_text", None), ("musicgen", "num_codebooks=1 set")):
        result = probe_model_type(model_type)
        assert result.status == "ok", result.reason
        assert note is None or any(note in n for n in result.notes)


def test_validator_demands_are_set_then_measured():
    # Gemma 4 Assistant's defaults fail its own validator ("... must be 0, got 256"): set as it demands,
    # the tiny model builds, and its forward is measured to need the target model's K/V states
    result = probe_model_type("gemma4_assistant")
    assert result.status == "n/a" and "shared_kv_states" in result.reason
    assert any("hidden_size_per_layer_input': 0" in n for n in result.notes)


def test_a_checkpoints_config_json_is_probed_instead_of_the_class_defaults(tmp_path):
    """Lfm2Config() has only attention layers; released LFM2 checkpoints mix in convolution layers, which
    make the model a hybrid. `probe lfm2 --config config.json` measures the layer kinds the file gives."""
    from harness.probe.__main__ import main as probe_main

    assert probe_model_type("lfm2").status == "ok"  # the class defaults: attention only
    released = {"model_type": "lfm2", "num_hidden_layers": 4, "layer_types": ["conv", "conv", "full_attention", "conv"]}
    r = probe_model_type("lfm2", config_json=released)
    assert r.status == "n/a" and r.reason.startswith("hybrid"), r.reason
    (tmp_path / "config.json").write_text(json.dumps(released))
    assert probe_main(["lfm2", "--config", str(tmp_path / "config.json")]) == 3
    with pytest.raises(SystemExit):
        probe_main(["lfm2", "--config", str(tmp_path / "missing.json")])  # a usage error naming the file
