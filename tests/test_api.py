"""The public library API, as a user's training code calls it."""
import torch

import harness
from harness.core.models import build_model
from harness.core.spec import SPEC_DIR, load_spec
from harness.matrix.oracle import full_context, real_prefix_kv


def model(name):
    return build_model(load_spec(SPEC_DIR / f"{name}.yaml"))


def test_prefix_tune_finds_the_spec_trains_only_the_prefix_and_lowers_the_loss():
    base = model("llama")
    pm = harness.prefix_tune(base, num_virtual_tokens=5)
    assert pm.spec.name == "llama"
    ids = torch.randint(0, 256, (4, 8), generator=torch.Generator().manual_seed(0))
    trainable = [p for p in pm.parameters() if p.requires_grad]
    assert trainable == list(pm.encoder.parameters())
    opt = torch.optim.Adam(trainable, lr=1e-1)
    losses = []
    for _ in range(15):
        loss = pm(ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] - 0.05
    assert all(p.grad is None for p in base.parameters())


def test_projection_encoder_feeds_every_model_layout():
    for name in ("llama", "qwen", "chatglm2"):
        pm = harness.prefix_tune(model(name), num_virtual_tokens=3, projection_dim=32)
        ids = torch.randint(0, 200, (2, 5))
        out = pm(ids)
        out.logits.sum().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in pm.encoder.parameters()), name


def test_generate_and_save_load_round_trip(tmp_path):
    base = model("qwen")
    pm = harness.prefix_tune(base, num_virtual_tokens=3, spec="qwen")
    prefix, ids = torch.randint(0, 256, (3,)), torch.randint(0, 256, (1, 5))
    pm.encoder.plant(real_prefix_kv(pm.contract, base, prefix, ids))
    with torch.no_grad():
        want, _ = full_context(pm.contract, base, prefix, ids, torch.ones_like(ids))
        assert torch.allclose(pm(ids).logits, want, atol=1e-5)
    out = pm.generate(ids, max_new_tokens=4)
    assert out.shape == (1, 9) and torch.equal(out[:, :5], ids)
    pm.save_prefix(tmp_path)
    again = harness.load_prefix(model("qwen"), tmp_path)
    with torch.no_grad():
        assert torch.equal(again(ids).logits, pm(ids).logits)
    assert torch.equal(again.generate(ids, max_new_tokens=4), out)


def test_detach_removes_the_fix_hooks():
    base = model("qwen")
    pm = harness.prefix_tune(base, num_virtual_tokens=3)
    assert pm.fixes_applied
    assert pm.detach() is base
    assert not any(m._forward_pre_hooks for m in base.modules())


def test_generate_takes_left_padded_batches_row_by_row_as_unpadded():
    """Batched generation pads on the left: each row must generate what it would alone. Holds where
    the spec passes positions counted over real tokens (explicit_offset, glm_2d)."""
    from harness.core.inputs import make_inputs

    for name in ("llama", "qwen1.5", "chatglm2", "chatglm"):
        base = model(name)
        pm = harness.prefix_tune(base, num_virtual_tokens=3, spec=name)
        g = torch.Generator().manual_seed(3)
        pm.encoder.plant(real_prefix_kv(pm.contract, base, torch.randint(0, 200, (3,), generator=g),
                                        make_inputs(pm.spec, base.config, 1, 5, g, "cpu")[0]))
        ids, mask = make_inputs(pm.spec, base.config, 3, 6, g, "cpu", lengths=[6, 4, 5], side="left")
        batch = pm.generate(ids, attention_mask=mask, max_new_tokens=5)[:, 6:]
        for row in range(3):
            alone = ids[row:row + 1, mask[row].bool()]
            assert torch.equal(pm.generate(alone, max_new_tokens=5)[:, alone.shape[1]:], batch[row:row + 1]), (name, row)
