"""``gradients``: after one backward pass every prefix parameter has a finite, non-zero gradient
and no base parameter has one."""
import torch

from ..bench import Measurement


def run(bench):
    attached = bench.attach()
    ids, mask = bench.inputs(batch=2, length=6)
    logits = attached.logits(ids, mask)
    targets = torch.randint(0, logits.shape[-1], ids.shape, generator=bench.generator).to(ids.device)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
    loss.backward()
    prefix = attached.prefix_parameters()
    prefix_ids = {id(p) for p in prefix.values()}
    missing = [n for n, p in prefix.items()
               if p.grad is None or not bool(torch.isfinite(p.grad).all()) or float(p.grad.abs().max()) == 0.0]
    # A base parameter leaks when it would train (requires_grad) or got a gradient anyway.
    leaked = [n for n, p in attached.base.named_parameters()
              if id(p) not in prefix_ids and (p.requires_grad or (p.grad is not None and float(p.grad.abs().max()) > 0))]
    bad = len(missing) + len(leaked) + (0 if prefix else 1)
    parts = [f"{len(prefix)} prefix parameter(s)"]
    if missing:
        parts.append(f"without a usable gradient: {', '.join(missing[:3])}")
    if leaked:
        parts.append(f"base parameters with a gradient: {', '.join(leaked[:3])}")
    if not prefix:
        parts.append("no trainable prefix parameters at all")
    return Measurement(bad == 0, float(bad), 0.0, "; ".join(parts))
