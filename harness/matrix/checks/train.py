"""``train``: brief training lowers the loss by at least half of its distance to a known floor,
and leaves the base weights bit-identical.

The task ("recover a planted prefix", see the project notes): the teacher is the model run on P
random real tokens followed by the input; the student is the adapter's prefix, started from the
K/V of *other* random tokens; the loss is KL(teacher || student) over fresh random inputs. Its
floor is exactly 0 and reachable by construction for a correct adapter, so "half the distance"
means something on tiny random models. The teacher never goes through an adapter.

Control: training starts where the planted student really is: before the first step, the
adapter's held-out logits equal the model's on [student tokens; input] within the equivalence bar.
An adapter that hands the model other K/V than it holds (dropped, swapped, reversed) fails here,
even though an optimiser could still drive its loss down. A starting loss within float noise makes
the task say nothing: inconclusive.

On a real checkpoint (--checkpoint/--checkpoints) the check runs a text task instead, with its own
bar: harness/matrix/text_task.py.
"""
import torch
import torch.nn.functional as F

from harness.matrix.bench import Measurement, inconclusive
from harness.matrix.oracle import full_context, real_prefix_kv, relative_error

FLOOR = 0.0
LEARNING_RATE = 3e-2
BATCH, LENGTH = 8, 8
CURVE_POINTS = 12


def _kl(teacher_logits, student_logits, mask) -> torch.Tensor:
    """Mean over valid positions of KL(teacher || student)."""
    t = F.log_softmax(teacher_logits.float(), dim=-1)
    s = F.log_softmax(student_logits.float(), dim=-1)
    per_pos = (t.exp() * (t - s)).sum(-1)  # (B, L)
    return (per_pos * mask).sum() / mask.sum()


def run(bench):
    if getattr(bench.cell, "checkpoint", None) is not None:  # a real checkpoint: the text task instead
        from harness.matrix import text_task

        return text_task.run(bench)
    attached = bench.attach()
    base = attached.base
    snapshot = {k: v.detach().clone() for k, v in base.state_dict().items()}
    teacher_prefix, student_start = bench.prefix_tokens(), bench.prefix_tokens()
    held_ids, held_mask = bench.inputs(BATCH, LENGTH)
    with torch.no_grad():
        attached.plant(real_prefix_kv(bench.contract, base, student_start, held_ids))
        held_teacher, _ = full_context(bench.contract, base, teacher_prefix, held_ids, held_mask)
        student_want, _ = full_context(bench.contract, base, student_start, held_ids, held_mask)
        start_err = relative_error(attached.logits(held_ids, held_mask), student_want, held_mask)

    def held_out() -> float:
        with torch.no_grad():
            return float(_kl(held_teacher, attached.logits(held_ids, held_mask), held_mask))

    params = list(attached.prefix_parameters().values())
    optimizer = torch.optim.Adam(params, lr=LEARNING_RATE)
    steps = bench.settings.steps
    every = max(1, steps // CURVE_POINTS)
    start = held_out()
    noise_floor = 1e-7
    if start <= noise_floor:
        return inconclusive(f"the starting held-out KL {start:.3e} is within float noise: the task says nothing here")
    curve = [(0, start)]
    train_losses = []
    for step in range(1, steps + 1):
        ids, mask = bench.inputs(BATCH, LENGTH)
        with torch.no_grad():
            teacher, _ = full_context(bench.contract, base, teacher_prefix, ids, mask)
        loss = _kl(teacher, attached.logits(ids, mask), mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        train_losses.append(float(loss.detach()))
        if step % every == 0 or step == steps:
            curve.append((step, held_out()))
    end = curve[-1][1]
    target = FLOOR + 0.5 * (start - FLOOR)
    unchanged = all(torch.equal(v, base.state_dict()[k]) for k, v in snapshot.items())
    starts_right = start_err <= bench.tolerance
    passed = starts_right and end <= target and unchanged
    ratio = (end - FLOOR) / (start - FLOOR) if start > FLOOR else float("nan")
    why = [f"held-out KL {start:.3e} -> {end:.3e} in {steps} steps ({ratio:.3f} of the distance to the floor {FLOOR}, "
           f"bar 0.5)"]
    why.append(f"start vs the planted student's full-context logits: relative error {start_err:.2e}"
               + ("" if starts_right else " (the adapter does not hand the model the K/V it holds)"))
    if not unchanged:
        why.append("the base weights changed")
    return Measurement(passed, ratio, 0.5, "; ".join(why),
                       {"curve": curve, "train_losses": train_losses, "base_unchanged": unchanged, "start_error": start_err})
