"""Gradient checkpointing keeps the prefix: PrefixModel's gradients with checkpointing on equal those
without, on a transformers-5 native model, and without the replay-safe cache the library drops it."""
import contextlib

import pytest
import torch

from harness.core import prefix_model
from harness.core.models import build_model
from harness.core.prefix_model import PrefixModel
from harness.core.spec import SPEC_DIR, load_spec
from harness.matrix.checks.checkpointing import training_recipe


def _step(spec, checkpointing: bool):
    torch.manual_seed(0)
    model = build_model(spec)
    pm = PrefixModel(model, spec, num_virtual_tokens=3)
    with torch.no_grad():
        pm.encoder.embedding.weight.normal_()  # a prefix that matters
    if checkpointing:
        training_recipe(model)
    else:
        model.train()
    ids = torch.randint(5, 200, (2, 6), generator=torch.Generator().manual_seed(1))
    out = pm(ids, labels=ids)
    out.loss.backward()
    return float(out.loss.detach()), pm.encoder.embedding.weight.grad


@pytest.mark.parametrize("name", ["llama", "chatglm2"])
def test_prefix_gradients_equal_with_and_without_checkpointing(name):
    spec = load_spec(SPEC_DIR / f"{name}.yaml")
    loss, grad = _step(spec, checkpointing=False)
    loss_ckpt, grad_ckpt = _step(spec, checkpointing=True)
    assert loss_ckpt == pytest.approx(loss, rel=1e-6)
    assert float(grad.abs().max()) > 0
    assert float((grad_ckpt - grad).abs().max() / grad.abs().max()) < 1e-5


def test_without_the_replay_safe_cache_transformers_drops_the_prefix(monkeypatch):
    """The control: what the library does on its own (hands checkpointed layers cache=None)."""
    monkeypatch.setattr(prefix_model, "cache_kept", lambda model, cache: contextlib.nullcontext())
    with pytest.raises(RuntimeError, match="must match"):
        _step(load_spec(SPEC_DIR / "llama.yaml"), checkpointing=True)


def test_a_training_recipe_use_cache_false_keeps_the_prefix():
    spec = load_spec(SPEC_DIR / "llama.yaml")
    torch.manual_seed(0)
    pm = PrefixModel(build_model(spec), spec, num_virtual_tokens=3)
    with torch.no_grad():
        pm.encoder.embedding.weight.normal_()
    ids = torch.randint(5, 200, (1, 6))
    with torch.no_grad():
        want = pm(ids).logits
        got = pm(ids, use_cache=False).logits  # as Trainer setups pass it: the prefix path keeps the cache
        bare = pm.base(ids).logits
    assert torch.equal(got, want) and not torch.allclose(bare, want)


def test_a_model_that_cannot_checkpoint_is_not_applicable_not_an_error(monkeypatch):
    """transformers refuses gradient_checkpointing_enable() on a class without support (CTRL, JetMoe,
    GPT-NeoX-Japanese under 5.24): the cell is n/a with the reason, and the sweep verdict ignores it."""
    from harness.matrix.bench import Bench, Settings
    from harness.matrix.cells import Cell
    from harness.matrix.verdict import settle
    from harness.reporting.sweeps import adapter_verdict

    spec = load_spec(SPEC_DIR / "llama.yaml")
    cell = Cell(spec, spec.variant("default"), "harness", "checkpointing", "transformers")
    model = build_model(spec)
    versions = {"torch": torch.__version__, "transformers": "5.24.0", "peft": "0.21.2", "python": "3"}
    assert settle(cell, Bench(cell, model, Settings()), versions).status == "pass"  # control: llama can
    monkeypatch.setattr(type(model), "supports_gradient_checkpointing", False)
    v = settle(cell, Bench(cell, model, Settings()), versions)
    assert v.status == "n/a" and "does not support gradient checkpointing" in v.message
    assert adapter_verdict(["pass", "n/a", "pass"]) == "pass"
    assert adapter_verdict(["pass", "n/a", "fail"]) == "fail" and adapter_verdict(["n/a"]) == "n/a"

