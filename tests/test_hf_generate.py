"""PrefixModel.generate hands the prefix to the model's own generate() where two measured steps agree
(beams, sampling, streamers), and falls back to the harness loop, saying why, where they do not."""
import pytest
import torch

from harness.core import hf_generate
from harness.core.models import build_model
from harness.core.prefix_model import PrefixModel
from harness.core.spec import SPEC_DIR, load_spec
from harness.matrix.oracle import real_prefix_kv


def _pm(name, p=3):
    spec = load_spec(SPEC_DIR / f"{name}.yaml")
    torch.manual_seed(0)
    pm = PrefixModel(build_model(spec), spec, num_virtual_tokens=p)
    prefix = torch.randint(5, 200, (p,), generator=torch.Generator().manual_seed(2))
    ids = torch.randint(5, 200, (2, 5), generator=torch.Generator().manual_seed(3))
    pm.encoder.plant(real_prefix_kv(pm.contract, pm.base, prefix, ids))
    return pm, prefix, ids


def test_native_model_generate_takes_the_prefix_greedy_and_beams():
    pm, prefix, ids = _pm("llama")
    mask = torch.ones_like(ids)
    mask[1, :2] = 0  # left padding
    got = pm.generate(ids, attention_mask=mask, max_new_tokens=6)
    assert pm.last_generate_path[0] == hf_generate.MODEL
    assert torch.equal(got, pm.generate(ids, attention_mask=mask, max_new_tokens=6, use_model_generate=False))
    beams = pm.generate(ids, max_new_tokens=6, num_beams=3)
    full = torch.cat((prefix.expand(2, -1), ids), dim=1)
    want = pm.base.generate(full, attention_mask=torch.ones_like(full), max_new_tokens=6, num_beams=3, do_sample=False,
                            eos_token_id=None, pad_token_id=0)
    assert torch.equal(beams[:, ids.shape[1]:], want[:, full.shape[1]:])


def test_streamer_never_sees_the_placeholders():
    pm, _, ids = _pm("llama")

    class Collect:
        def __init__(self):
            self.puts, self.ended = [], False

        def put(self, value):
            self.puts.append(value)

        def end(self):
            self.ended = True

    streamer = Collect()
    out = pm.generate(ids[:1], max_new_tokens=4, streamer=streamer)
    assert streamer.ended and torch.equal(streamer.puts[0].reshape(-1), ids[0])
    assert torch.equal(torch.cat([p.reshape(-1) for p in streamer.puts]), out[0])


def test_qwen_v1_falls_back_to_the_loop_and_says_why():
    pm, _, ids = _pm("qwen")
    out = pm.generate(ids, max_new_tokens=4)
    path, why = pm.last_generate_path
    assert path == hf_generate.LOOP and why
    assert out.shape == (2, ids.shape[1] + 4)
    with pytest.raises(ValueError, match="num_beams: not available on the harness's own generation loop"):
        pm.generate(ids, max_new_tokens=4, num_beams=3)
    with pytest.raises(ValueError, match="use_model_generate=True"):
        pm.generate(ids, max_new_tokens=4, use_model_generate=True)


def test_loop_sampling_with_top_k_1_is_greedy():
    pm, _, ids = _pm("qwen")
    greedy = pm.generate(ids, max_new_tokens=4, use_model_generate=False)
    torch.manual_seed(5)
    sampled = pm.generate(ids, max_new_tokens=4, use_model_generate=False, do_sample=True, top_k=1)
    assert torch.equal(sampled, greedy)
    torch.manual_seed(5)
    hot = pm.generate(ids, max_new_tokens=8, use_model_generate=False, do_sample=True, temperature=50.0)
    assert not torch.equal(hot[:, ids.shape[1]:], pm.generate(ids, max_new_tokens=8, use_model_generate=False)[:, ids.shape[1]:])


@pytest.mark.parametrize("name", ["llama", "qwen"])  # the model's generate() and the harness loop
def test_max_length_counts_the_callers_prompt(name):
    pm, _, ids = _pm(name)
    out = pm.generate(ids, max_length=ids.shape[1] + 3)
    assert out.shape == (2, ids.shape[1] + 3), pm.last_generate_path
    assert torch.equal(out, pm.generate(ids, max_new_tokens=3))
    assert pm.generate(ids).shape == (2, ids.shape[1] + 20)  # the default


def test_stopping_criteria_never_see_the_placeholders():
    from transformers import StoppingCriteria, StoppingCriteriaList

    pm, _, ids = _pm("llama")
    seen = []

    class StopAtLength(StoppingCriteria):  # a length rule over what the caller passed: stop at L + 2
        def __call__(self, input_ids, scores, **kwargs):
            seen.append(input_ids.clone())
            return input_ids.shape[1] >= ids.shape[1] + 2  # a bool: what 4.37 expects, and 5.x accepts too

    out = pm.generate(ids, max_new_tokens=6, stopping_criteria=StoppingCriteriaList([StopAtLength()]))
    assert pm.last_generate_path[0] == hf_generate.MODEL
    assert out.shape == (2, ids.shape[1] + 2)
    assert torch.equal(seen[0][:, :ids.shape[1]], ids)  # the prompt, not P placeholders in front of it


def test_without_raw_step_logits_the_probe_uses_scores_and_output_logits_falls_back(monkeypatch):
    """transformers before 4.38 has no output_logits: the agreement probe compares the scores instead, and a
    caller asking for raw step logits gets the loop, which has them (as measured under 4.37.2)."""
    pm, _, ids = _pm("llama")
    monkeypatch.setattr(hf_generate, "returns_raw_logits", lambda: False)
    agrees, why = hf_generate.model_generate_agrees(pm, ids, torch.ones_like(ids))
    assert agrees, why
    out, logits = pm.generate(ids, max_new_tokens=3, output_logits=True)
    assert pm.last_generate_path[0] == hf_generate.LOOP and "4.38" in pm.last_generate_path[1]
    assert logits.shape[:2] == (2, 3)
    assert torch.equal(out, pm.generate(ids, max_new_tokens=3))
    assert pm.last_generate_path[0] == hf_generate.MODEL  # without output_logits the model's generate() runs
