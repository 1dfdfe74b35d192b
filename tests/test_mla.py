"""K and V of different head dims (MLA: DeepSeek-V2/V3 cache a latent, K slot (b, 1, s, kv_lora_rank)
and V slot (b, 1, s, qk_rope_head_dim)): the optional ``kv.v_head_dim`` through the spec, the encoder,
the contract, save/load, validate and the PEFT adapter. Every test has a control: the common case
(one head dim) is unchanged, a wrong V head dim is refused, a prefix that is not handed over fails.
"""
from __future__ import annotations

import pytest
import torch
import yaml

import harness
from harness.core.contract import CacheContract
from harness.core.encoder import PrefixEncoder
from harness.core.models import build_model, kv_dims
from harness.core.spec import SPEC_DIR, SpecError, check_buildable, load_spec
from harness.matrix.bench import Bench, Settings
from harness.matrix.cells import Cell
from harness.matrix.checks import run as run_check
from harness.matrix.oracle import full_context, real_prefix_kv, relative_error

LAYERS, HEADS, DK, DV, P = 3, 2, 6, 4, 5


def _spec(name="deepseek_v3"):
    return load_spec(SPEC_DIR / f"{name}.yaml")


def _edited(tmp_path, name, edit):
    """The repo's spec with ``edit(data)`` applied, saved under tmp_path with the same name."""
    data = yaml.safe_load((SPEC_DIR / f"{name}.yaml").read_text())
    edit(data)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# ----------------------------------------------------------------------------- the encoder
def test_split_encoder_emits_k_and_v_of_their_own_head_dims_and_plants_them():
    enc = PrefixEncoder(LAYERS, HEADS, DK, P, v_head_dim=DV)
    k, v = torch.randn(LAYERS, HEADS, P, DK), torch.randn(LAYERS, HEADS, P, DV)
    enc.plant((k, v))
    out_k, out_v = enc(batch_size=3)
    assert out_k.shape == (LAYERS, 3, HEADS, P, DK) and out_v.shape == (LAYERS, 3, HEADS, P, DV)
    for b in range(3):
        assert torch.equal(out_k[:, b], k) and torch.equal(out_v[:, b], v)
    assert enc.config()["v_head_dim"] == DV and enc.width == LAYERS * HEADS * (DK + DV)
    # a gradient of the embedding reads back in the same (K, V) form
    sum(t.sum() * (i + 1) for i, t in enumerate(enc(batch_size=2))).backward()
    gk, gv = enc.as_kv(enc.embedding.weight.grad)
    assert torch.equal(gk, torch.full_like(k, 2.0)) and torch.equal(gv, torch.full_like(v, 4.0))


def test_split_encoder_refuses_one_stacked_tensor():
    enc = PrefixEncoder(LAYERS, HEADS, DK, P, v_head_dim=DV)
    with pytest.raises(ValueError, match="this encoder emits"):
        enc.plant(torch.randn(LAYERS, 2, HEADS, P, DK))


def test_one_head_dim_keeps_the_stacked_form_and_the_saved_weight_order():
    """Control: without v_head_dim (or equal to head_dim) the output is one (layers, 2, B, H, P, D)
    tensor, read from the weight as (P, layers, 2, H, D): prefixes saved before load unchanged."""
    for enc in (PrefixEncoder(LAYERS, HEADS, DK, P), PrefixEncoder(LAYERS, HEADS, DK, P, v_head_dim=DK)):
        out = enc(batch_size=2)
        assert isinstance(out, torch.Tensor) and out.shape == (LAYERS, 2, 2, HEADS, P, DK)
        old = enc.embedding.weight.view(P, LAYERS, 2, HEADS, DK).permute(1, 2, 3, 0, 4)
        assert torch.equal(out[:, :, 1], old)


def test_split_encoder_with_projection_trains_every_parameter():
    enc = PrefixEncoder(LAYERS, HEADS, DK, P, projection_dim=16, v_head_dim=DV)
    k, v = enc(batch_size=2)
    (k.sum() + v.pow(2).sum()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())


# ----------------------------------------------------------------------------- spec and contract
def test_v_head_dim_is_optional_and_defaults_to_head_dim():
    llama, ds = _spec("llama"), _spec()
    assert llama.kv.v_head_dim is None
    d = kv_dims(llama, build_model(llama).config)
    assert d.v_head_dim == d.head_dim and not d.split
    d = kv_dims(ds, build_model(ds).config)
    assert (d.heads, d.head_dim, d.v_head_dim, d.split) == (1, 32, 8, True)


def test_contract_round_trips_a_split_prefix_through_the_models_cache():
    spec = _spec()
    model = build_model(spec)
    contract = CacheContract.for_model(model, spec)
    k, v = torch.randn(2, 3, 1, P, 32), torch.randn(2, 3, 1, P, 8)  # (layers, B, H, P, D*)
    cache = contract.to_model_cache((k, v))
    got_k, got_v = contract.from_model_cache(cache)
    assert torch.equal(got_k, k) and torch.equal(got_v, v)


def test_a_missing_or_wrong_v_head_dim_is_refused_naming_the_field(tmp_path):
    spec = _spec()
    measured = check_buildable(spec)  # control: the repo's spec passes, with the measured shapes
    assert measured["k_shape"][-1] == 32 and measured["v_shape"][-1] == 8
    missing = load_spec(_edited(tmp_path, "deepseek_v3", lambda d: d["kv"].pop("v_head_dim")))
    with pytest.raises(SpecError) as e:
        check_buildable(missing)
    assert e.value.field == "kv.v_head_dim" and "K and V head dims differ" in e.value.fix
    assert "qk_rope_head_dim" in e.value.fix  # the config attribute equal to the measured 8
    wrong = load_spec(_edited(tmp_path, "deepseek_v3", lambda d: d["kv"].update(v_head_dim="v_head_dim")))
    with pytest.raises(SpecError) as e:
        check_buildable(wrong)
    assert e.value.field == "kv.v_head_dim" and "12" in e.value.problem and "measured 8" in e.value.problem
    with pytest.raises(SpecError) as e:
        load_spec(_edited(tmp_path, "deepseek_v3", lambda d: d["kv"].update(v_head_dim="no_such_size")))
    assert e.value.field == "kv.v_head_dim"


# ----------------------------------------------------------------------------- the prefix on the model
def test_save_load_round_trips_a_split_prefix(tmp_path):
    spec = _spec()
    base = build_model(spec)
    pm = harness.prefix_tune(base, num_virtual_tokens=4, spec=spec)
    g = torch.Generator().manual_seed(0)
    prefix, other = torch.randint(0, 200, (4,), generator=g), torch.randint(0, 200, (4,), generator=g)
    ids = torch.randint(0, 200, (2, 6), generator=g)
    mask = torch.ones_like(ids)
    kv = real_prefix_kv(pm.contract, base, prefix, ids)
    assert isinstance(kv, tuple) and [t.shape for t in kv] == [(2, 1, 4, 32), (2, 1, 4, 8)]
    pm.encoder.plant(kv)
    with torch.no_grad():
        before = pm(ids).logits
        want, _ = full_context(pm.contract, base, prefix, ids, mask)
        moved, _ = full_context(pm.contract, base, other, ids, mask)
    pm.save_prefix(tmp_path)
    again = harness.load_prefix(build_model(spec), tmp_path)
    with torch.no_grad():
        after = again(ids).logits
    assert torch.equal(before, after)
    assert relative_error(after, want) < 1e-4
    assert relative_error(moved, want) > 1e-2  # control: another prefix moves the logits
    meta = (tmp_path / "prefix.json").read_text()
    assert '"v_head_dim": 8' in meta and '"head_dim": 32' in meta


def test_checks_pass_on_the_latent_cache_and_a_dropped_prefix_fails():
    spec = _spec()
    model = build_model(spec)
    for check in ("accepts", "equivalence", "gradients"):
        cell = Cell(spec, spec.variant("default"), "harness", check, "transformers")
        m = run_check(check, Bench(cell, model, Settings()))
        assert m.passed and not m.inconclusive, f"{check}: {m.message}"

    def dropping(adapter, base, spec_, variant, p):
        from harness.core.prefix_model import PrefixModel
        from harness.matrix.adapters.ours import PrefixModelAttached

        pm = PrefixModel(base, spec_, p)
        pm.prefix_cache = lambda batch_size: None
        return PrefixModelAttached(pm)

    cell = Cell(spec, spec.variant("default"), "harness", "equivalence", "transformers")
    m = run_check("equivalence", Bench(cell, model, Settings(), attacher=dropping))
    assert not m.passed and not m.inconclusive, m.message


def test_peft_refuses_a_split_prefix_clearly():
    pytest.importorskip("peft")
    from harness.matrix.adapters import attach

    spec = _spec()
    model = build_model(spec)
    contract = CacheContract.for_model(model, spec)
    kv = real_prefix_kv(contract, model, torch.arange(4) + 10, torch.arange(6)[None] + 20)
    attached = attach("peft", model, spec, spec.variant("default"), 4)
    with pytest.raises(ValueError, match="K and V head dims differ") as e:
        attached.plant(kv)
    assert "K of 2 x 1 x 32 and V of 2 x 1 x 8" in str(e.value)
    # control: PEFT takes a real-token prefix where K and V share a head dim
    llama = _spec("llama")
    base = build_model(llama)
    kv = real_prefix_kv(CacheContract.for_model(base, llama), base, torch.arange(4) + 10, torch.arange(6)[None] + 20)
    attach("peft", base, llama, llama.variant("default"), 4).plant(kv)
