"""Behaviour of the ChatGLM2-6B / ChatGLM3-6B reference model, and (optionally) its agreement with the real code.

The real remote code is compared only when PREFIX_COMPAT_CODE_DIR_CHATGLM2 and/or
PREFIX_COMPAT_CODE_DIR_CHATGLM3 name a local folder holding it (config.json, configuration_chatglm.py,
modeling_chatglm.py; quantization.py is stubbed when absent); no weights are needed. The real code loads
unpatched only under transformers 4.x: under 5.x a load failure skips the comparison.
"""

import shutil

import pytest
import torch
import transformers

from harness.reference.chatglm2 import (
    ChatGLMConfig,
    ChatGLMForConditionalGeneration,
    RotaryEmbedding,
)

TINY = dict(padded_vocab_size=256, hidden_size=64, num_layers=2, num_attention_heads=4, kv_channels=16,
            multi_query_attention=True, multi_query_group_num=2, ffn_hidden_size=128, seq_length=128,
            add_qkv_bias=True)
LAYERS, H, G, D = 2, 4, 2, 16


def scale_up(model, seed=1):
    # weights larger than the 0.02 init, so that mask/position mistakes show clearly in the logits
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.25)
    return model


def make_model(seed=0, **over):
    torch.manual_seed(seed)
    return scale_up(ChatGLMForConditionalGeneration(ChatGLMConfig(**{**TINY, **over}))).eval()


def cache_of(out):
    return out.cache if hasattr(type(out), "__dataclass_fields__") and "cache" in type(out).__dataclass_fields__ \
        else out.past_key_values


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def ids_for(b, n, seed=3):
    return torch.randint(0, 256, (b, n), generator=torch.Generator().manual_seed(seed))


def greedy_recompute(model, ids, steps, **kw):
    seq = ids
    for _ in range(steps):
        mask = kw.get("attention_mask")
        if mask is not None:
            kw["attention_mask"] = torch.cat([mask, mask.new_ones(mask.shape[0], seq.shape[1] - mask.shape[1])], 1)
        nxt = model(seq, **kw).logits[:, -1].argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], 1)
    return seq


# ---------------------------------------------------------------- config / init

def test_config_aliases_and_deterministic_init():
    cfg = ChatGLMConfig(**TINY)
    assert cfg.model_type == "chatglm" and cfg.num_hidden_layers == 2 and cfg.use_cache is True
    assert cfg.vocab_size == 256 and cfg.tie_word_embeddings is False and hasattr(cfg, "max_length")
    sds = []
    for _ in range(2):
        torch.manual_seed(0)
        sds.append(ChatGLMForConditionalGeneration(ChatGLMConfig(**TINY, pre_seq_len=3)).state_dict())
    assert all(torch.equal(sds[0][k], sds[1][k]) for k in sds[0])
    sd = sds[0]
    assert torch.equal(sd["transformer.encoder.layers.0.input_layernorm.weight"], torch.ones(64))
    assert abs(sd["transformer.output_layer.weight"].std().item() - 0.02) < 0.003
    assert abs(sd["transformer.prefix_encoder.embedding.weight"].std().item() - 0.02) < 0.003
    assert sd["transformer.encoder.layers.0.self_attention.query_key_value.weight"].shape == (H * D + 2 * G * D, 64)
    assert sd["transformer.encoder.layers.1.mlp.dense_h_to_4h.weight"].shape == (256, 64)
    assert sd["transformer.prefix_encoder.embedding.weight"].shape == (3, LAYERS * 2 * G * D)
    assert "transformer.rotary_pos_emb.inv_freq" in sd


# ---------------------------------------------------------------- 1. cache layout

@pytest.mark.parametrize("mqa", [True, False])
def test_cache_layout_and_post_rotary_keys(mqa):
    model = make_model(multi_query_attention=mqa)
    g = G if mqa else H
    ids = ids_for(2, 9)
    past = cache_of(model(ids[:, :4]))
    assert isinstance(past, tuple) and len(past) == LAYERS
    assert all(k.shape == v.shape == (4, 2, g, D) for k, v in past)
    out = model(ids[:, 4:], past_key_values=past, position_ids=4 + torch.arange(5).expand(2, 5),
                attention_mask=torch.ones(2, 9))
    new = cache_of(out)
    assert all(k.shape == (9, 2, g, D) for k, _ in new)
    assert all(torch.equal(new[i][0][:4], past[i][0]) and torch.equal(new[i][1][:4], past[i][1]) for i in range(LAYERS))
    # layer-0 keys by hand: the cache holds them after rotary, values unrotated
    tr = model.transformer
    with torch.no_grad():
        x = tr.encoder.layers[0].input_layernorm(tr.embedding(ids[:, :4]))
        qkv = tr.encoder.layers[0].self_attention.query_key_value(x)
        k = (qkv[..., H * D:H * D + g * D] if mqa else qkv.unflatten(-1, (H, 3 * D))[..., D:2 * D]).reshape(4, 2, g, D)
        v = (qkv[..., H * D + g * D:] if mqa else qkv.unflatten(-1, (H, 3 * D))[..., 2 * D:]).reshape(4, 2, g, D)
    pos = torch.arange(4, dtype=torch.float32)
    theta = 1.0 / (10000 ** (torch.arange(0, D // 2, 2, dtype=torch.float32) / (D // 2)))
    ang = torch.outer(pos, theta)[:, None, None, :]  # (S, 1, 1, D/4)
    ev, od = k[..., 0:D // 2:2], k[..., 1:D // 2:2]
    rot = torch.stack([ev * ang.cos() - od * ang.sin(), od * ang.cos() + ev * ang.sin()], -1).flatten(3)
    assert torch.allclose(past[0][0], torch.cat([rot, k[..., D // 2:]], -1), atol=1e-5)
    assert torch.allclose(past[0][1], v, atol=1e-6)
    assert not torch.allclose(past[0][0][1:], k[1:], atol=1e-3)  # really rotated


# ---------------------------------------------------------------- 2. external past == full context

def test_past_with_positions_and_mask_equals_full_context():
    model = make_model()
    P, L = 4, 5
    ids = ids_for(1, P + L)
    full = model(ids).logits
    past = cache_of(model(ids[:, :P]))
    pos = (P + torch.arange(L)).unsqueeze(0)
    cont = model(ids[:, P:], past_key_values=past, position_ids=pos, attention_mask=torch.ones(1, P + L)).logits
    assert rel_err(cont, full[:, P:]) <= 1e-4
    # without a mask the same (get_masks still builds the causal mask whenever a past exists and L != 1)
    cont2 = model(ids[:, P:], past_key_values=past, position_ids=pos).logits
    assert rel_err(cont2, full[:, P:]) <= 1e-4
    # position_ids=None: new tokens restart at 0, the prefix is position-less
    cont3 = model(ids[:, P:], past_key_values=past, attention_mask=torch.ones(1, P + L)).logits
    assert rel_err(cont3, full[:, P:]) > 1e-2
    # decode step (L == 1, no mask at all): equals the full forward's last token
    step = model(ids[:, -1:], past_key_values=cache_of(model(ids[:, :-1])),
                 position_ids=torch.tensor([[P + L - 1]])).logits
    assert rel_err(step, full[:, -1:]) <= 1e-4


def test_right_padded_batch_with_past():
    model = make_model()
    P, L = 3, 6
    ids = ids_for(2, P + L, seed=5)
    mask = torch.ones(2, P + L, dtype=torch.long)
    mask[1, -2:] = 0  # row 1 right-padded by 2
    full = model(ids, attention_mask=mask).logits
    past = cache_of(model(ids[:, :P], attention_mask=mask[:, :P]))
    pos = (P + torch.arange(L)).expand(2, L)
    cont = model(ids[:, P:], past_key_values=past, position_ids=pos, attention_mask=mask).logits
    assert rel_err(cont[0], full[0, P:]) <= 1e-4
    assert rel_err(cont[1, :L - 2], full[1, P:P + L - 2]) <= 1e-4
    # a [b, L] mask with a past of P is the caller's error, as in the real code
    with pytest.raises(RuntimeError):
        model(ids[:, P:], past_key_values=past, position_ids=pos, attention_mask=mask[:, P:])


def test_get_masks_and_causal_fast_path():
    model = make_model()
    ids = ids_for(2, 3)
    past = ((torch.zeros(2, 2, G, D), torch.zeros(2, 2, G, D)),) * LAYERS
    pad = torch.tensor([[1, 1, 1, 1, 1], [0, 1, 1, 1, 0]])
    m = model.transformer.get_masks(ids, past, padding_mask=pad)
    assert m.shape == (2, 1, 3, 5) and m.dtype == torch.bool
    attend = ~m[:, 0]
    assert attend[0].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    assert attend[1].tolist() == [[0, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 1, 1, 1, 0]]
    # no past: padded query rows are made to see everything (avoids all-masked rows)
    m0 = model.transformer.get_masks(ids, None, padding_mask=torch.tensor([[1, 1, 1], [1, 1, 0]]))
    assert (~m0[1, 0]).tolist() == [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    # no mask / all-ones mask: the is_causal fast path, same logits; prefix of a sequence is unaffected by its end
    assert torch.equal(model(ids).logits, model(ids, attention_mask=torch.ones(2, 3)).logits)
    other = torch.cat([ids[:, :2], (ids[:, 2:] + 1) % 256], 1)
    assert torch.allclose(model(ids).logits[:, :2], model(other).logits[:, :2], atol=1e-6)


def test_inputs_embeds_are_sequence_first_and_need_input_ids():
    model = make_model()
    ids = ids_for(2, 5)
    emb = model.transformer.embedding.word_embeddings(ids).transpose(0, 1)  # (L, B, hidden)
    assert torch.allclose(model(ids, inputs_embeds=emb).logits, model(ids).logits, atol=1e-6)
    with pytest.raises(AttributeError):
        model(inputs_embeds=emb)


# ---------------------------------------------------------------- 3. built-in prefix (P-Tuning v2)

@pytest.mark.parametrize("projection", [False, True])
def test_builtin_prefix_trains_only_prefix_encoder(projection):
    P = 3
    model = make_model(pre_seq_len=P, prefix_projection=projection)
    prompt = model.transformer.get_prompt(2, torch.device("cpu"), torch.float32)
    assert len(prompt) == LAYERS and all(t.shape == (2, P, 2, G, D) for t in prompt)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("transformer.prefix_encoder.") for n in trainable)
    assert ("transformer.prefix_encoder.trans.0.weight" in trainable) == projection
    ids = ids_for(2, 6)
    out = model(ids, attention_mask=torch.ones(2, 6), labels=ids)
    assert all(k.shape == (P + 6, 2, G, D) for k, _ in cache_of(out))
    out.loss.backward()
    for n, p in model.named_parameters():
        if n in trainable:
            assert p.grad is not None and p.grad.abs().sum() > 0, n
        else:
            assert p.grad is None, n


def test_builtin_prefix_equals_external_positionless_past():
    P, L = 3, 5
    model = make_model(pre_seq_len=P)
    base = ChatGLMForConditionalGeneration(ChatGLMConfig(**TINY)).eval()
    missing = base.load_state_dict(model.state_dict(), strict=False)
    assert missing.missing_keys == [] and missing.unexpected_keys == ["transformer.prefix_encoder.embedding.weight"]
    ids = ids_for(2, L)
    mask = torch.ones(2, L, dtype=torch.long)
    mask[1, -1] = 0
    with torch.no_grad():
        prompt = model.transformer.get_prompt(2, ids.device, torch.float32)
        past = tuple((t[0], t[1]) for t in prompt)
        ours = model(ids, attention_mask=mask).logits
        ext = base(ids, past_key_values=past, attention_mask=torch.cat([torch.ones(2, P, dtype=torch.long), mask], 1))
    assert rel_err(ours, ext.logits) <= 1e-5
    assert rel_err(model(ids).logits, base(ids, past_key_values=past).logits) <= 1e-5
    # the prefix has no positions: giving the real tokens P.. positions changes the result
    shifted = base(ids, past_key_values=past, position_ids=(P + torch.arange(L)).expand(2, L)).logits
    assert rel_err(shifted, model(ids).logits) > 1e-2
    # dropout 0.1 on the prompt in training mode only
    model.train()
    a = model.transformer.get_prompt(1, ids.device, torch.float32)[0]
    assert (a == 0).any() and not (prompt[0][:, :, :1] == 0).any()


def test_gradient_checkpointing_keeps_the_prefix():
    model = make_model(pre_seq_len=3).train()
    ids = ids_for(2, 6)
    torch.manual_seed(7)
    loss = model(ids, labels=ids).loss
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()
    torch.manual_seed(7)
    loss_gc = model(ids, labels=ids).loss
    assert torch.allclose(loss, loss_gc, atol=1e-6)
    loss_gc.backward()
    assert model.transformer.prefix_encoder.embedding.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------- 4. generate

def test_generate_equals_greedy_recompute():
    model = make_model()
    ids = ids_for(2, 7)
    out = model.generate(ids, max_new_tokens=5, do_sample=False)
    assert torch.equal(out, greedy_recompute(model, ids, 5))


def test_generate_left_padded_uses_plain_positions():
    model = make_model()
    ids = ids_for(2, 7)
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, :2] = 0
    out = model.generate(ids, attention_mask=mask, max_new_tokens=4, do_sample=False)
    assert torch.equal(out, greedy_recompute(model, ids, 4, attention_mask=mask))


def test_generate_with_builtin_prefix():
    model = make_model(pre_seq_len=3)
    ids = ids_for(2, 6)
    out = model.generate(ids, max_new_tokens=4, do_sample=False)
    assert torch.equal(out, greedy_recompute(model, ids, 4))


def test_generate_with_external_past_and_positions():
    model = make_model()
    P, L = 4, 5
    ids = ids_for(1, P + L)
    past = cache_of(model(ids[:, :P]))
    out = model.generate(ids[:, P:], past_key_values=past, attention_mask=torch.ones(1, P + L, dtype=torch.long),
                         position_ids=(P + torch.arange(L)).unsqueeze(0), max_new_tokens=4, do_sample=False)
    assert torch.equal(out, greedy_recompute(model, ids, 4)[:, P:])


# ---------------------------------------------------------------- ChatGLM2 vs ChatGLM3 rotary table

def test_rope_table_chatglm2_vs_chatglm3():
    v2, v3 = RotaryEmbedding(8), RotaryEmbedding(8, fp32_theta=True)
    assert torch.equal(v2(600), v3(600))  # identical in float32
    t2, t3 = v2.to(torch.bfloat16)(600), v3.to(torch.bfloat16)(600)
    assert t2.dtype == t3.dtype == torch.bfloat16
    assert torch.equal(t3, v3.float()(600).to(torch.bfloat16))
    assert not torch.equal(t2[300:], t3[300:])  # ChatGLM2 rounds positions above 256 in bf16


# ---------------------------------------------------------------- 5. against the real remote code

def _load_real(name, tmp_path, **over):
    from remote_code import real_code_dir
    from transformers import AutoConfig, AutoModel

    src = real_code_dir(name)  # skips unless PREFIX_COMPAT_CODE_DIR_CHATGLM2 / _CHATGLM3 is set
    # a fresh copy per test: module name = folder name, and quantization.py (imported lazily) must exist
    dst = tmp_path / f"real_{name}"
    shutil.copytree(src, dst, dirs_exist_ok=True)
    if not (dst / "quantization.py").exists():
        (dst / "quantization.py").write_text("def quantize(*args, **kwargs):\n    raise NotImplementedError\n")
    try:
        cfg = AutoConfig.from_pretrained(str(dst), trust_remote_code=True, torch_dtype=torch.float32,
                                         **{**TINY, **over})
        return AutoModel.from_config(cfg, trust_remote_code=True, empty_init=False).float().eval()
    except Exception as exc:  # noqa: BLE001
        if int(transformers.__version__.split(".")[0]) >= 5:
            pytest.skip(f"real ChatGLM code does not load unpatched under transformers {transformers.__version__}: "
                        f"{type(exc).__name__}: {exc}")
        raise


def _maxdiff(a, b):
    return (a - b).abs().max().item()


REAL = ["chatglm2", "chatglm3"]


@pytest.mark.parametrize("env", REAL)
def test_matches_real_code(env, tmp_path):
    glm3 = env == "chatglm3"
    ours = make_model(rope_fp32_theta=glm3)
    real = _load_real(env, tmp_path)
    real.load_state_dict(ours.state_dict())
    P, L = 4, 5
    ids = ids_for(2, P + L, seed=11)
    mask = torch.ones(2, P + L, dtype=torch.long)
    mask[1, -2:] = 0
    pos = (P + torch.arange(L)).expand(2, L)
    with torch.no_grad():
        for kw in ({}, {"attention_mask": mask}):  # no past: fast causal path, then padded get_masks path
            assert _maxdiff(ours(ids, **kw).logits, real(ids, **kw).logits) <= 1e-5
        past_o, past_r = cache_of(ours(ids[:, :P])), real(ids[:, :P]).past_key_values
        for (ko, vo), (kr, vr) in zip(past_o, past_r):
            assert ko.shape == kr.shape and _maxdiff(ko, kr) <= 1e-5 and _maxdiff(vo, vr) <= 1e-5
        for kw in ({"position_ids": pos, "attention_mask": mask}, {"position_ids": pos}, {}):
            o = ours(ids[:, P:], past_key_values=past_o, **kw)
            r = real(ids[:, P:], past_key_values=past_r, **kw)
            assert _maxdiff(o.logits, r.logits) <= 1e-5
            for (ko, vo), (kr, vr) in zip(cache_of(o), r.past_key_values):
                assert ko.shape == kr.shape == (P + L, 2, G, D)
                assert _maxdiff(ko, kr) <= 1e-5 and _maxdiff(vo, vr) <= 1e-5
        step = dict(past_key_values=past_o, position_ids=torch.full((2, 1), P))
        assert _maxdiff(ours(ids[:, P:P + 1], **step).logits,
                        real(ids[:, P:P + 1], **{**step, "past_key_values": past_r}).logits) <= 1e-5
    assert torch.equal(ours.generate(ids, max_new_tokens=4, do_sample=False),
                       real.generate(ids, max_new_tokens=4, do_sample=False))
    # rotary table in bf16: where ChatGLM2 and ChatGLM3 differ
    rope_o = ours.transformer.rotary_pos_emb.to(torch.bfloat16)(600)
    rope_r = real.transformer.rotary_pos_emb.to(torch.bfloat16)(600)
    assert torch.equal(rope_o, rope_r)


@pytest.mark.parametrize("projection", [False, True])
@pytest.mark.parametrize("env", REAL)
def test_builtin_prefix_matches_real_code(env, projection, tmp_path):
    P = 3
    ours = make_model(pre_seq_len=P, prefix_projection=projection, rope_fp32_theta=env == "chatglm3")
    real = _load_real(env, tmp_path, pre_seq_len=P, prefix_projection=projection)
    real.load_state_dict(ours.state_dict())
    assert {n for n, p in real.named_parameters() if p.requires_grad} == \
        {n for n, p in ours.named_parameters() if p.requires_grad}
    ids = ids_for(2, 6, seed=13)
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, -1] = 0
    o, r = ours(ids, attention_mask=mask, labels=ids), real(ids, attention_mask=mask, labels=ids)
    assert _maxdiff(o.logits, r.logits) <= 1e-5 and abs(o.loss.item() - r.loss.item()) <= 1e-5
    for (ko, vo), (kr, vr) in zip(cache_of(o), r.past_key_values):
        assert ko.shape == kr.shape == (P + 6, 2, G, D) and _maxdiff(ko, kr) <= 1e-5 and _maxdiff(vo, vr) <= 1e-5
    o.loss.backward()
    r.loss.backward()
    go = dict(ours.transformer.prefix_encoder.named_parameters())
    for n, p in real.transformer.prefix_encoder.named_parameters():
        assert _maxdiff(go[n].grad, p.grad) <= 1e-5
    assert torch.equal(ours.generate(ids, max_new_tokens=4, do_sample=False),
                       real.generate(ids, max_new_tokens=4, do_sample=False))
