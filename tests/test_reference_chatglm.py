"""Behaviour of the ChatGLM-6B (v1) reference model, and (optionally) its agreement with the real code.

The real remote code is compared only when PREFIX_COMPAT_CODE_DIR_CHATGLM names a local folder holding
it (config.json, configuration_chatglm.py, modeling_chatglm.py); no weights are needed.
"""


import pytest
import torch

from harness.reference.chatglm import ChatGLMConfig, ChatGLMForConditionalGeneration

BOS, EOS, MASK, GMASK, PAD = 250, 251, 252, 253, 254
TINY = dict(vocab_size=256, hidden_size=64, num_layers=2, num_attention_heads=4, inner_hidden_size=256,
            max_sequence_length=128, bos_token_id=BOS, eos_token_id=EOS, mask_token_id=MASK,
            gmask_token_id=GMASK, pad_token_id=PAD)
H, D, LAYERS = 4, 16, 2


def make_model(seed=0, **over):
    torch.manual_seed(seed)
    model = ChatGLMForConditionalGeneration(ChatGLMConfig(**{**TINY, **over}))
    with torch.no_grad():  # weights larger than the 0.02 init, so that mask/position mistakes show
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.3)
    return model.eval()


def rows(seed=1):
    """Batch of 2: row 0 `ctx [gMASK] <bos> a b c d`, row 1 `ctx [MASK] ctx <bos> a b c d`."""
    g = torch.Generator().manual_seed(seed)
    r = lambda n: torch.randint(0, 200, (n,), generator=g)  # noqa: E731
    row0 = torch.cat([r(6), torch.tensor([GMASK, BOS]), r(4)])
    row1 = torch.cat([r(3), torch.tensor([MASK]), r(2), torch.tensor([BOS]), r(5)])
    return torch.stack([row0, row1])  # [2, 12]; context lengths 7 and 6


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def test_positions_and_masks_follow_glm_rules():
    m = make_model()
    ids = rows()
    pos = m.get_position_ids(ids, [6, 3], ids.device, [True, False])
    assert pos.shape == (2, 2, 12)
    assert pos[0, 0].tolist() == [0, 1, 2, 3, 4, 5, 6] + [6] * 5  # after the context: the mask's index
    assert pos[0, 1].tolist() == [0] * 7 + [1, 2, 3, 4, 5]
    assert pos[1, 0].tolist() == [0, 1, 2, 3, 4, 5] + [3] * 6
    assert pos[1, 1].tolist() == [0] * 6 + [1, 2, 3, 4, 5, 6]
    mask = m.get_masks(ids, ids.device)  # True = masked
    assert mask.shape == (2, 1, 12, 12) and mask.dtype == torch.bool
    for b, c in ((0, 7), (1, 6)):
        want = torch.tensor([[not (j <= i or j < c) for j in range(12)] for i in range(12)])
        assert torch.equal(mask[b, 0], want)


def test_cache_layout_is_seq_first_and_grows_on_dim0():
    m = make_model()
    ids = rows()
    out = m(ids, use_cache=True)
    assert len(out.past_key_values) == LAYERS
    assert all(k.shape == v.shape == (12, 2, H, D) for k, v in out.past_key_values)
    P = 5  # a past of the first P tokens, then the other 7
    past = tuple((k[:P], v[:P]) for k, v in out.past_key_values)
    pos, mask = m.get_position_ids(ids, [6, 3], ids.device, [True, False]), m.get_masks(ids, ids.device)
    out2 = m(ids[:, P:], past_key_values=past, position_ids=pos[..., P:], attention_mask=mask[:, :, P:], use_cache=True)
    assert all(k.shape == (12, 2, H, D) for k, _ in out2.past_key_values)
    for (k, v), (k2, v2) in zip(out.past_key_values, out2.past_key_values):
        assert torch.equal(k2[:P], k[:P]) and torch.allclose(k2, k, atol=1e-5) and torch.allclose(v2, v, atol=1e-5)
    pm = make_model(pre_seq_len=3)
    pout = pm(ids, use_cache=True)
    prompt = pm.transformer.get_prompt(2, ids.device, torch.float32)  # layers x [2, P, b, h, d]
    assert prompt[0].shape == (2, 3, 2, H, D)
    for (k, v), kv in zip(pout.past_key_values, prompt):
        assert k.shape == (3 + 12, 2, H, D)
        assert torch.equal(k[:3], kv[0]) and torch.equal(v[:3], kv[1])  # prefix keys stored as given (no rotary)


def test_external_past_needs_caller_positions_and_mask():
    m = make_model()
    ids = rows()
    full = m(ids, use_cache=True)
    P = 4  # inside the context of both rows
    past = tuple((k[:P], v[:P]) for k, v in full.past_key_values)
    pos = m.get_position_ids(ids, [6, 3], ids.device, [True, False])[..., P:]  # [b, 2, L] of the full sequence
    mask = m.get_masks(ids, ids.device)[:, :, P:, :]  # [b, 1, L, P+L]
    assert mask.shape == (2, 1, 8, 12)
    out = m(ids[:, P:], past_key_values=past, position_ids=pos, attention_mask=mask)
    assert rel_err(out.logits, full.logits[:, P:]) <= 1e-4
    # quirk: with a past and no mask nothing is masked, so tokens after <bos> see later tokens
    unmasked = m(ids[:, P:], past_key_values=past, position_ids=pos)
    assert rel_err(unmasked.logits, full.logits[:, P:]) > 1e-2
    # ... which is harmless for a single new token (a decode step): it may see everything anyway
    past11 = tuple((k[:11], v[:11]) for k, v in full.past_key_values)
    full_pos = m.get_position_ids(ids, [6, 3], ids.device, [True, False])
    step = m(ids[:, 11:], past_key_values=past11, position_ids=full_pos[..., 11:])
    assert rel_err(step.logits[:, -1], full.logits[:, -1]) <= 1e-4


def test_rows_without_mask_or_bos_raise():
    m = make_model()
    ids = rows()
    no_mask = ids.clone()
    no_mask[1, 3] = 7
    with pytest.raises(ValueError):
        m(no_mask)
    with pytest.raises(ValueError):
        m.prepare_inputs_for_generation(no_mask)
    no_bos = ids.clone()
    no_bos[0, 7] = 7
    with pytest.raises(ValueError):
        m(no_bos)


@pytest.mark.parametrize("projection", [False, True])
def test_builtin_prefix_trains_prefix_and_lm_head_only(projection):
    m = make_model(pre_seq_len=3, prefix_projection=projection)
    ids = rows()
    base = make_model()
    base.load_state_dict(m.state_dict(), strict=False)
    assert rel_err(m(ids).logits, base(ids).logits) > 1e-3  # the prefix is used
    # built-in prefix == external past from get_prompt + positions of the input alone + P visible columns
    prompt = m.transformer.get_prompt(2, ids.device, torch.float32)
    pos = base.get_position_ids(ids, [6, 3], ids.device, [True, False])
    mask = torch.cat([torch.zeros(2, 1, 12, 3, dtype=torch.bool), base.get_masks(ids, ids.device)], dim=3)
    ext = base(ids, past_key_values=tuple((kv[0], kv[1]) for kv in prompt), position_ids=pos, attention_mask=mask)
    assert rel_err(ext.logits, m(ids).logits) <= 1e-5
    m.train()
    torch.manual_seed(3)
    a = m(ids).logits
    assert rel_err(a, m(ids).logits) > 1e-4  # Dropout(0.1) on the prefix in training
    m(ids, labels=ids).loss.backward()
    grads = {n for n, p in m.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    prefix = {n for n, _ in m.named_parameters() if n.startswith("transformer.prefix_encoder.")}
    assert grads == prefix | {"lm_head.weight"}  # as the real code: lm_head lies outside the frozen module
    assert not any(p.requires_grad for n, p in m.named_parameters() if n.startswith("transformer.")
                   and n not in prefix)


def greedy_full_recompute(model, ids, n):
    for _ in range(n):
        logits = model(ids).logits[:, -1].clone()
        logits[:, EOS] = -float("inf")  # as min_new_tokens does in generate
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    return ids


@pytest.mark.parametrize("over", [{}, {"pre_seq_len": 3}])
def test_generate_equals_greedy_full_recompute(over):
    m = make_model(**over)
    ids = rows()[:, :8]  # row 0 ends with [gMASK] <bos>; row 1 continues one token after <bos>
    want = greedy_full_recompute(m, ids, 5)
    got = m.generate(ids, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    assert torch.equal(got, want)
    assert len(set(want[0, 8:].tolist())) > 1  # not a degenerate repetition


def test_prepare_inputs_for_generation_truncates_with_any_past():
    m = make_model()
    ids = rows()
    first = m.prepare_inputs_for_generation(ids)
    assert first["input_ids"].shape == (2, 12) and first["attention_mask"].shape == (2, 1, 12, 12)
    past = m(ids, use_cache=True).past_key_values
    step = m.prepare_inputs_for_generation(ids, past_key_values=past)
    assert torch.equal(step["input_ids"], ids[:, -1:]) and step["attention_mask"] is None
    assert step["position_ids"][:, :, 0].tolist() == [[6, 12 - 7], [3, 12 - 6]]  # [mask index, len - context]


# ---------------------------------------------------------------------------------------------------
def real_model(**over):
    from remote_code import real_code_dir
    from transformers import AutoConfig, AutoModel

    cfg = AutoConfig.from_pretrained(real_code_dir("chatglm"), trust_remote_code=True, **{**TINY, **over})
    return AutoModel.from_config(cfg, trust_remote_code=True).float().eval()


def max_diff(a, b):
    return (a - b).abs().max().item()


@pytest.mark.parametrize("over", [{}, {"pre_seq_len": 3}, {"pre_seq_len": 3, "prefix_projection": True},
                                  {"position_encoding_2d": False}])
def test_matches_real_remote_code(over):
    import transformers
    ours = make_model(**over)
    real = real_model(**over)
    real.load_state_dict(ours.state_dict())
    ids = rows()
    tol = 1e-5

    def same(a, b, use_cache=True):
        assert max_diff(a.logits, b.logits) <= tol
        if use_cache:
            for (k, v), (rk, rv) in zip(a.past_key_values, b.past_key_values):
                assert k.shape == rk.shape and max_diff(k, rk) <= tol and max_diff(v, rv) <= tol

    with torch.no_grad():
        same(ours(ids, use_cache=True), real(ids, use_cache=True))
        a, b = ours(ids, labels=ids, output_hidden_states=True), real(ids, labels=ids, output_hidden_states=True)
        assert abs(a.loss.item() - b.loss.item()) <= tol
        assert all(max_diff(x, y) <= tol for x, y in zip(a.hidden_states, b.hidden_states))
        if "pre_seq_len" not in over:  # external past of the first P tokens + caller positions and 4-D mask
            P = 4
            past = tuple((k[:P], v[:P]) for k, v in ours(ids, use_cache=True).past_key_values)
            kw = real.prepare_inputs_for_generation(ids)  # real's own positions/mask for the full sequence
            pos, mask = kw["position_ids"][..., P:], kw["attention_mask"][:, :, P:]
            same(ours(ids[:, P:], past_key_values=past, position_ids=pos, attention_mask=mask, use_cache=True),
                 real(ids[:, P:], past_key_values=past, position_ids=pos, attention_mask=mask, use_cache=True))
            same(ours(ids[:, P:], past_key_values=past, position_ids=pos, use_cache=True),  # unmasked quirk
                 real(ids[:, P:], past_key_values=past, position_ids=pos, use_cache=True))
        for kw_ours, kw_real in ((ours.prepare_inputs_for_generation(ids), real.prepare_inputs_for_generation(ids)),
                                 (ours.prepare_inputs_for_generation(ids, past_key_values=()),
                                  real.prepare_inputs_for_generation(ids, past_key_values=()))):
            for key in ("input_ids", "position_ids", "attention_mask"):
                x, y = kw_ours[key], kw_real[key]
                assert (x is None and y is None) or torch.equal(x, y)
    if int(transformers.__version__.split(".")[0]) < 5:  # the real generate() breaks under transformers 5
        short = ids[:, :8]
        assert torch.equal(ours.generate(short, max_new_tokens=5, min_new_tokens=5, do_sample=False),
                           real.generate(short, max_new_tokens=5, min_new_tokens=5, do_sample=False))
