"""Behaviour of the Qwen (v1) reference model (harness/reference/qwen.py).

The last test compares it with the real hub remote code; it runs only when PREFIX_COMPAT_CODE_DIR_QWEN
names a local folder holding that code (config.json, configuration_qwen.py, modeling_qwen.py,
qwen_generation_utils.py, cpp_kernels.py) and transformers < 5 (the real code needs patches under 5).
"""

import pytest
import torch
import transformers

from harness.reference.qwen import QWenBlock, QWenConfig, QWenLMHeadModel

TINY = dict(vocab_size=256, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, kv_channels=16,
            intermediate_size=256, seq_length=128, fp32=True, use_flash_attn=False)
B, P, L, H, D = 2, 3, 6, 4, 16


def make(seed=0, **over):
    torch.manual_seed(seed)
    return QWenLMHeadModel(QWenConfig(**{**TINY, **over})).eval()


def tokens(n, b=B, seed=1):
    return torch.randint(0, TINY["vocab_size"], (b, n), generator=torch.Generator().manual_seed(seed))


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def split_run(model, x, p, **kw):
    """Cache of the first p tokens, then the rest fed with that past (mask covers past + new)."""
    past = model(x[:, :p], use_cache=True).past_key_values
    return model(x[:, p:], past_key_values=past, attention_mask=torch.ones(x.shape), use_cache=True, **kw)


@torch.no_grad()
def test_cache_layout_and_init_are_deterministic():
    m = make()
    out = m(tokens(P + L), use_cache=True)
    assert isinstance(out, transformers.modeling_outputs.CausalLMOutputWithPast)
    assert len(out.past_key_values) == TINY["num_hidden_layers"]
    assert all(k.shape == v.shape == (B, P + L, H, D) for k, v in out.past_key_values)
    step = split_run(m, tokens(P + L), P)
    assert step.past_key_values[0][0].shape == (B, P + L, H, D)  # past concatenated on dim 1
    # keys are stored after rotary: the cached past keys equal the full run's keys at those positions
    assert torch.allclose(step.past_key_values[1][0][:, :P], out.past_key_values[1][0][:, :P], atol=1e-6)
    sd1, sd2 = m.state_dict(), make().state_dict()
    assert all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    assert m.transformer.h[0].mlp.w1.weight.shape == (TINY["intermediate_size"] // 2, TINY["hidden_size"])


@torch.no_grad()
def test_past_without_causal_mask_is_bidirectional_dec2023_quirk():
    x = tokens(P + L)
    # one new token (decoding) is exact whatever the flag
    m = make()
    full = m(x).logits
    one = split_run(m, x, P + L - 1).logits
    assert rel_err(one[:, -1], full[:, -1]) <= 1e-4
    # one layer: the last new token sees everything either way, earlier new tokens see the future
    m1 = make(num_hidden_layers=1)
    full1, step1 = m1(x).logits, split_run(m1, x, P).logits
    assert rel_err(step1[:, -1], full1[:, -1]) <= 1e-4
    assert rel_err(step1[:, 0], full1[:, P]) > 1e-2
    # two layers: the leak reaches the last token too, via the second layer's keys of earlier tokens
    step = split_run(m, x, P).logits
    assert rel_err(step[:, :-1], full[:, P:-1]) > 1e-2
    assert rel_err(step[:, -1], full[:, -1]) > 1e-3
    # earlier new tokens depend on later ones
    y = x.clone()
    y[:, -1] = (y[:, -1] + 1) % TINY["vocab_size"]
    assert rel_err(split_run(m, y, P).logits[:, 0], step[:, 0]) > 1e-3
    # causal_with_past=True (Aug-2023 behaviour): every new token equals the full forward
    mc = make(causal_with_past=True)
    assert rel_err(split_run(mc, x, P).logits, mc(x).logits[:, P:]) <= 1e-4


@torch.no_grad()
def test_block_pre_hook_mask_restores_causality_and_position_ids_are_ignored():
    m, x = make(), tokens(P + L)
    full = m(x).logits
    seen = []

    def hook(module, args, kwargs):
        mask = kwargs["attention_mask"]  # additive (B, 1, 1, K) built by QWenModel
        seen.append((tuple(mask.shape), kwargs["layer_past"][0].shape[1]))
        q_len, k_len = args[0].shape[1], mask.shape[-1]
        causal = torch.ones(q_len, k_len, dtype=torch.bool).tril(k_len - q_len)
        kwargs["attention_mask"] = mask.expand(-1, -1, q_len, -1).masked_fill(~causal, torch.finfo(mask.dtype).min)
        return args, kwargs

    past = m(x[:, :P], use_cache=True).past_key_values
    handles = [b.register_forward_pre_hook(hook, with_kwargs=True) for b in m.modules() if isinstance(b, QWenBlock)]
    try:
        out = m(x[:, P:], past_key_values=past, attention_mask=torch.ones(B, P + L)).logits
    finally:
        for h in handles:
            h.remove()
    assert seen == [((B, 1, 1, P + L), P)] * TINY["num_hidden_layers"]
    assert rel_err(out, full[:, P:]) <= 1e-4
    # rotary alone positions the new tokens at P..P+L-1: position_ids make no difference
    a = split_run(m, x, P).logits
    b = split_run(m, x, P, position_ids=torch.zeros(B, L, dtype=torch.long)).logits
    assert torch.equal(a, b)


@torch.no_grad()
def test_mask_must_cover_past_and_new_tokens():
    m, x = make(), tokens(P + L)
    past = m(x[:, :P], use_cache=True).past_key_values
    with pytest.raises(RuntimeError, match="must match"):
        m(x[:, P:], past_key_values=past, attention_mask=torch.ones(B, L))
    # padding in the 2-D mask: a masked past position changes the result, a [B, P+L] mask is accepted
    mask = torch.ones(B, P + L)
    mask[0, 0] = 0
    masked = m(x[:, P:], past_key_values=past, attention_mask=mask).logits
    assert rel_err(masked[0], split_run(m, x, P).logits[0]) > 1e-3
    assert torch.equal(masked[1], split_run(m, x, P).logits[1])


def test_prepare_inputs_for_generation_quirks():
    m, x = make(), tokens(P + L)
    past = m(x[:, :P], use_cache=True).past_key_values
    mask = torch.ones(B, P + L)
    inp = m.prepare_inputs_for_generation(x, past_key_values=past, attention_mask=mask, use_cache=True)
    assert inp["input_ids"].shape == (B, 1) and inp["attention_mask"] is mask  # prompt cut to its last token
    inp1 = m.prepare_inputs_for_generation(x[:1], attention_mask=mask[:1])
    assert inp1["attention_mask"] is None and torch.equal(inp1["input_ids"], x[:1])  # batch 1: mask dropped


def test_gradient_checkpointing_drops_the_prefix():
    m, x = make(), tokens(P + L)
    past = m(x[:, :P], use_cache=True).past_key_values
    enable = getattr(m, "activation_checkpointing_enable", None) or m.gradient_checkpointing_enable
    enable()
    m.train()
    with_past = m(x[:, P:], past_key_values=past).logits
    alone = m(x[:, P:]).logits
    assert torch.allclose(with_past, alone, atol=1e-6)
    with_past.sum().backward()
    assert m.transformer.wte.weight.grad is not None


@torch.no_grad()
def test_generate_equals_greedy_full_recompute():
    m = make()
    for x, mask in ((tokens(7, b=1), None), (tokens(7), torch.ones(B, 7, dtype=torch.long))):
        kw = {} if mask is None else {"attention_mask": mask}
        got = m.generate(x, max_new_tokens=5, do_sample=False, pad_token_id=0, **kw)
        seq = x
        for _ in range(5):
            seq = torch.cat([seq, m(seq).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        assert torch.equal(got, seq)


# --- comparison with the real remote code ------------------------------------------------------------
@torch.no_grad()
def test_matches_real_remote_code():
    from remote_code import real_code_dir
    from transformers import AutoConfig, AutoModelForCausalLM

    CODE_DIR = real_code_dir("qwen")  # noqa: N806 - skips unless PREFIX_COMPAT_CODE_DIR_QWEN is set

    def pair(**over):
        ours = make(seed=3, **over)
        cfg = AutoConfig.from_pretrained(CODE_DIR, trust_remote_code=True, **{**TINY, **over})
        real = AutoModelForCausalLM.from_config(cfg, trust_remote_code=True).eval()
        real.load_state_dict(ours.state_dict(), strict=True)
        return ours, real

    def same(a, b, tol=1e-5):
        if isinstance(a, (tuple, list)):
            assert len(a) == len(b)
            return max(same(u, v, tol) for u, v in zip(a, b))
        diff = (a.float() - b.float()).abs().max().item()
        assert a.shape == b.shape and diff <= tol, diff
        return diff

    def both(ours, real, fn):
        return same(fn(ours), fn(real))

    x = tokens(P + L, seed=5)
    pad = torch.ones(B, P + L)
    pad[0, :2] = 0
    ours, real = pair()
    diffs = {
        "no past": both(ours, real, lambda m: m(x, attention_mask=pad).logits),
        "past+mask": both(ours, real, lambda m: (lambda o: (o.logits, o.past_key_values))(split_run(m, x, P))),
        "past, no mask": both(ours, real, lambda m: m(x[:, P:], past_key_values=m(
            x[:, :P], use_cache=True).past_key_values).logits),
        "[B,L] mask error": both(ours, real, lambda m: torch.tensor(float(_raises(lambda: m(x[:, P:], past_key_values=m(
            x[:, :P], use_cache=True).past_key_values, attention_mask=torch.ones(B, L)))))),
        "generate": both(ours, real, lambda m: m.generate(x[:1], max_new_tokens=4, do_sample=False).float()),
        "generate(past)": both(ours, real, lambda m: m.generate(x[:1], past_key_values=m(
            x[:1, :P], use_cache=True).past_key_values, max_new_tokens=3, do_sample=False).float()),
    }
    # a lead-style block pre-hook sees the same keyword arguments on both
    def widen(mod, args, kwargs):  # [B, 1, 1, K] -> [B, 1, L, K], values unchanged
        if kwargs["attention_mask"] is not None:
            kwargs["attention_mask"] = kwargs["attention_mask"].expand(-1, -1, args[0].shape[1], -1).contiguous()
        return args, kwargs

    for m in (ours, real):
        for blk in m.transformer.h:
            blk.register_forward_pre_hook(widen, with_kwargs=True)
    diffs["pre-hook"] = both(ours, real, lambda m: split_run(m, x, P).logits)
    # beyond seq_length: logn scaling and per-row dynamic NTK, then a cached step reusing the alphas
    ours, real = pair(seq_length=4)  # per-row NTK alphas 3 and 7
    diffs["ntk/logn"] = both(ours, real, lambda m: (lambda o: (o.logits, o.past_key_values, m(
        x[:, -1:], past_key_values=o.past_key_values, attention_mask=torch.cat([pad, pad[:, -1:]], 1)).logits))(
        m(x, attention_mask=pad, use_cache=True)))
    # int8 cache variant: ((q, scale, zero), (q, scale, zero)) in (B, H, S, D)
    ours, real = pair(use_cache_quantization=True)
    diffs["int8 cache"] = both(ours, real, lambda m: (lambda o: (o.logits, o.past_key_values))(split_run(m, x, P)))
    # gradient checkpointing in training mode (prefix dropped on both)
    ours, real = pair()
    past = ours(x[:, :P], use_cache=True).past_key_values
    for m in (ours, real):
        m.gradient_checkpointing_enable()
        m.train()
    with torch.enable_grad():
        diffs["checkpointing"] = both(ours, real, lambda m: m(x[:, P:], past_key_values=past).logits)
    print("max abs diff vs real code:", diffs)


def _raises(fn):
    try:
        fn()
    except RuntimeError:
        return True
    return False
