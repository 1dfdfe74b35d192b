"""``train`` on a real checkpoint: a prefix learns a small text task written for this project.

The task (data/text_task.jsonl, written by data/make_text_task.py): rewrite a record
``name: Ada Moreau | born: 1874 | city: Lyon\\n=>`` as `` Moreau, Ada (1874, Lyon)\\n``; 320
training and 80 held-out examples. The loss is the cross-entropy of the target tokens given the
prompt (prompt tokens are context only). A pretrained model has never seen this output format and
everything it needs is in the prompt, so a prefix alone learns it quickly.

Bar: the held-out loss falls by at least BAR (a quarter) of its start within ``--steps`` steps
(default 60), the base model gets no gradient, and every loss is finite. Control: before the
first step the adapter's logits equal the model's on [the init tokens; input] within the dtype's
equivalence bar (the prefix starts as the K/V of real tokens, so an adapter that hands the model
other K/V than it holds fails here); a starting loss already below NOISE_FLOOR says nothing about
learning (the model knows the format): inconclusive. Tokens per second of the training steps
(prompt and target tokens, padding excluded) go into the row.
"""
from __future__ import annotations

import functools
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .bench import Measurement, inconclusive
from .oracle import full_context, real_prefix_kv, relative_error

DATA = Path(__file__).with_name("data") / "text_task.jsonl"
BAR = 0.25  # the held-out loss must fall by at least this fraction of its start
NOISE_FLOOR = 0.05  # nats per target token: below this at the start, the model already does the task
LEARNING_RATE = 5e-2  # Adam on the raw K/V entries (no MLP); P-Tuning v2 uses 5e-3..5e-2
BATCH = 8
HELD_OUT_BATCH = 16
CURVE_POINTS = 12
INIT_TEXT = "Rewrite the record as: last name, first name (year, city).\n"


def examples(path: Path = DATA) -> tuple[list[dict], list[dict]]:
    """(train, held_out) rows of the task file; ValueError naming the file and line when malformed."""
    train, held = [], []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        try:
            row = json.loads(line)
            prompt, target, which = row["prompt"], row["target"], row["split"]
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}:{n}: expected {{prompt, target, split}} ({e}); regenerate it with "
                             f"python -m harness.matrix.data.make_text_task") from None
        (train if which == "train" else held).append({"prompt": prompt, "target": target})
    if not train or not held:
        raise ValueError(f"{path}: needs train and held_out rows; regenerate it with python -m harness.matrix.data.make_text_task")
    return train, held


@functools.lru_cache(maxsize=8)
def tokenizer_for(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def _ids(tokenizer, text: str, special: bool = False) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def encode(tokenizer, rows: list[dict], device, vocab_size: int):
    """Right-padded (ids, mask, target_mask), each (B, L); target_mask marks the target tokens.
    Token ids at or above the model's vocabulary are an error naming the tokenizer."""
    seqs, targets = [], []
    for r in rows:
        # The prompt gets the tokens the model's tokenizer adds to an input (LLaMA's <s>, ChatGLM's
        # [gMASK] and <bos>/sop where that family wants them); the target continues it.
        p, t = _ids(tokenizer, r["prompt"], special=True), _ids(tokenizer, r["target"])
        seqs.append(p + t)
        targets.append([0] * len(p) + [1] * len(t))
    top = max(max(s) for s in seqs)
    if top >= vocab_size:
        raise ValueError(f"the checkpoint's tokenizer gives id {top}, its model has {vocab_size} embeddings")
    length = max(len(s) for s in seqs)
    ids = torch.zeros(len(rows), length, dtype=torch.long)
    mask = torch.zeros_like(ids)
    target = torch.zeros_like(ids)
    for i, (s, t) in enumerate(zip(seqs, targets)):
        ids[i, :len(s)] = torch.tensor(s)
        mask[i, :len(s)] = 1
        target[i, :len(t)] = torch.tensor(t)
    return ids.to(device), mask.to(device), target.to(device)


def target_loss(logits, ids, target) -> torch.Tensor:
    """Mean cross-entropy of the target tokens, each predicted from the position before it."""
    v = logits.shape[-1]
    per = F.cross_entropy(logits[:, :-1].float().reshape(-1, v), ids[:, 1:].reshape(-1), reduction="none")
    want = target[:, 1:].reshape(-1).float()
    return (per * want).sum() / want.sum()


def _sync(device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def run(bench, data: Path = DATA) -> Measurement:
    tokenizer = tokenizer_for(bench.cell.checkpoint.path)
    train, held = examples(data)
    vocab = bench.config.vocab_size
    attached = bench.attach()
    base = attached.base
    held_batches = [encode(tokenizer, held[i:i + HELD_OUT_BATCH], bench.device, vocab)
                    for i in range(0, len(held), HELD_OUT_BATCH)]

    # Start from the K/V of real tokens (P of the instruction text), the usual P-Tuning v2 init
    # from words, and a known right answer for the control.
    words = _ids(tokenizer, INIT_TEXT)
    p = bench.num_virtual_tokens
    init = torch.tensor((words * (p // max(1, len(words)) + 1))[:p], device=bench.device)
    ids0, mask0, _ = held_batches[0]
    with torch.no_grad():
        attached.plant(real_prefix_kv(bench.contract, base, init, ids0))
        want, _ = full_context(bench.contract, base, init, ids0, mask0)
        start_err = relative_error(attached.logits(ids0, mask0), want, mask0)

    def held_out() -> float:
        with torch.no_grad():
            losses = [float(target_loss(attached.logits(i, m), i, t)) for i, m, t in held_batches]
        return sum(losses) / len(losses)

    start = held_out()
    if start < NOISE_FLOOR:
        return inconclusive(f"the starting held-out loss {start:.3f} is already below {NOISE_FLOOR}: the model does "
                            f"the task without training")
    params = list(attached.prefix_parameters().values())
    optimizer = torch.optim.Adam(params, lr=LEARNING_RATE)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(bench.settings.seed)).tolist()
    steps, every = bench.settings.steps, max(1, bench.settings.steps // CURVE_POINTS)
    curve, train_losses, tokens, seconds = [(0, start)], [], 0, 0.0
    for step in range(1, steps + 1):
        pick = [train[order[(step * BATCH + j) % len(train)]] for j in range(BATCH)]
        ids, mask, target = encode(tokenizer, pick, bench.device, vocab)
        _sync(bench.device)
        t0 = time.perf_counter()
        loss = target_loss(attached.logits(ids, mask), ids, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        _sync(bench.device)
        seconds += time.perf_counter() - t0
        tokens += int(mask.sum())
        train_losses.append(float(loss.detach()))
        if step % every == 0 or step == steps:
            curve.append((step, held_out()))
    end = curve[-1][1]
    base_grads = [n for n, q in base.named_parameters() if q.grad is not None]
    finite = all(math.isfinite(x) for x in train_losses) and math.isfinite(end)
    starts_right = start_err <= bench.tolerance
    fell = (start - end) / start
    passed = starts_right and finite and fell >= BAR and not base_grads
    tokens_per_s = tokens / seconds if seconds > 0 else float("nan")
    why = [f"held-out target loss {start:.3f} -> {end:.3f} in {steps} steps (fell by {fell:.1%}, bar {BAR:.0%}); "
           f"{tokens_per_s:,.0f} tokens/s"]
    why.append(f"start vs the init tokens' full-context logits: relative error {start_err:.2e}"
               + ("" if starts_right else " (the adapter does not hand the model the K/V it holds)"))
    if base_grads:
        why.append(f"the base model got gradients ({len(base_grads)} tensors, e.g. {base_grads[0]})")
    if not finite:
        why.append("a loss was not finite")
    return Measurement(passed, fell, BAR, "; ".join(why),
                       {"task": "text", "data": DATA.name, "curve": curve, "train_losses": train_losses,
                        "tokens_per_s": tokens_per_s, "train_tokens": tokens, "start_error": start_err,
                        "checkpoint": bench.cell.checkpoint.id})
