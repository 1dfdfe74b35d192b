"""The training step of ``harness.prefix_tune`` against PEFT's prefix tuning and against the limit.

    python -m benchmarks.train_step                 # LLaMA-shaped, 8 layers, hidden 512, seq 256, batch 4, P 16
    python -m benchmarks.train_step --quick         # small sizes: under a minute on 2 cores
    python -m benchmarks.train_step --spec qwen     # any spec's model, scaled to a similar size
    python -m benchmarks.train_step --device cuda --dtype bfloat16

One process, one frozen model, one batch. Every variant runs the same forward + backward of the
LM loss; they take turns step by step (the order rotating) so a busy machine slows them alike,
and each ratio is the median of step-by-step ratios. Variants:

- ``harness``: ``harness.prefix_tune`` (encoder -> canonical tensor -> the model's layout and container);
- ``peft``: PEFT's ``PrefixTuningConfig`` + ``get_peft_model``, where PEFT runs the model (n/a otherwise);
- ``limit``: P leaf K/V tensors, no encoder, handed straight to ``CacheContract.to_model_cache``
  (a B-wide expanded view, as the encoder emits): all of the method's work, nothing else.

Peak memory is measured per variant in a process of its own (CPU: growth of the peak RSS over the
timed steps; CUDA: ``torch.cuda.max_memory_allocated`` over the steps' baseline). Last line:
``ratios harness/limit=X harness/peft=Y mem harness/peft=Z``.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

from . import (
    ROOT,
    append_parquet,
    environment,
    fmt_ratio,
    pairwise_median,
    peak_rss_bytes,
    reset_peak_rss,
    rss_bytes,
)

VARIANTS = ("limit", "harness", "peft")
MEMORY_STEPS = 3  # steps over which a variant's peak memory is taken, after one warm-up step
DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class Sizes:
    layers: int = 8
    hidden: int = 512
    heads: int = 8  # query heads; a spec with grouped KV heads keeps its KV:query ratio (LLaMA: 4 KV heads)
    seq: int = 256
    batch: int = 4
    prefix: int = 16
    steps: int = 12
    warmup: int = 3


QUICK = Sizes(layers=2, hidden=128, heads=4, seq=64, batch=2, prefix=8, steps=12, warmup=2)

# Config keys by what they size, across the naming schemes our specs use (transformers, Qwen v1,
# ChatGLM). Scaling is by role, so any spec's tiny build.config grows to the benchmark's size.
LAYER_KEYS = ("num_hidden_layers", "num_layers", "n_layer")
HIDDEN_KEYS = ("hidden_size", "n_embd")
HEAD_KEYS = ("num_attention_heads", "n_head")
KV_HEAD_KEYS = ("num_key_value_heads", "multi_query_group_num")
HEAD_DIM_KEYS = ("head_dim", "kv_channels")
FFN_KEYS = ("intermediate_size", "ffn_hidden_size", "inner_hidden_size", "n_inner")
POSITION_KEYS = ("max_position_embeddings", "seq_length", "max_sequence_length", "n_positions")


class NotApplicable(Exception):
    """A variant that cannot run this model (PEFT on Qwen v1 / ChatGLM): reported as n/a."""


def scaled_config(spec, sizes: Sizes) -> dict:
    """The spec's tiny build.config with its sizes scaled to ``sizes`` (widths keep their ratios
    to hidden, KV heads their ratio to query heads, positions cover P + seq)."""
    cfg = dict(spec.build.config)
    hidden_key = next((k for k in HIDDEN_KEYS if k in cfg), None)
    head_key = next((k for k in HEAD_KEYS if k in cfg), None)
    if hidden_key is None or head_key is None:
        raise SystemExit(f"{spec.path}: build.config has no hidden size ({'/'.join(HIDDEN_KEYS)}) or head count "
                         f"({'/'.join(HEAD_KEYS)}); the benchmark cannot scale it. Fix: pass a spec with those keys")
    width = sizes.hidden / cfg[hidden_key]
    heads = sizes.heads / cfg[head_key]
    for key in cfg:
        if key in LAYER_KEYS:
            cfg[key] = sizes.layers
        elif key in FFN_KEYS:
            cfg[key] = int(cfg[key] * width)
        elif key in KV_HEAD_KEYS:
            cfg[key] = max(1, int(cfg[key] * heads))
        elif key in HEAD_DIM_KEYS:
            cfg[key] = sizes.hidden // sizes.heads
        elif key in POSITION_KEYS:
            cfg[key] = max(cfg[key], sizes.prefix + sizes.seq + 8)
    cfg[hidden_key], cfg[head_key] = sizes.hidden, sizes.heads
    return cfg


def build(spec, sizes: Sizes, device: str, dtype):
    """A frozen random-weight model of the spec's classes at the benchmark's sizes."""
    import torch

    from harness.core.models import kv_dims, resolve_class

    torch.manual_seed(spec.build.seed)
    source = spec.build.code_source
    config = resolve_class(source, spec.build.config_class)(**scaled_config(spec, sizes))
    model = resolve_class(source, spec.build.model_class)(config).to(device=device, dtype=dtype).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, kv_dims(spec, config)


# ----------------------------------------------------------------------------- variants
class Limit:
    """P leaf K/V per layer in the canonical (layers, 2, 1, H, P, D), expanded to the batch (a view,
    as the encoder's output) and handed to the model through its contract: no encoder, no copy."""

    name = "limit"

    def __init__(self, model, spec, p: int, fixes: bool):
        import torch

        from harness.core.contract import CacheContract
        from harness.core.fixes import apply_fixes

        self.model, self.p = model, p
        self.contract = CacheContract.for_model(model, spec)
        d, ref = self.contract.dims, next(model.parameters())
        self.kv = (torch.randn(d.layers, 2, 1, d.heads, p, d.head_dim, device=ref.device, dtype=ref.dtype) * 0.02
                   ).requires_grad_(True)  # (layers, 2, 1, H, P, D), a leaf
        # The spec's fixes (Qwen v1's causal mask) belong to the method: the limit runs them too,
        # unless the harness variant already hooked this very model.
        self.hooks = apply_fixes(model, spec, self.contract) if fixes else []

    def parameters(self):
        return [self.kv]

    def loss(self, ids, mask):
        kv = self.kv.expand(-1, -1, ids.shape[0], -1, -1, -1)  # (layers, 2, B, H, P, D) view
        kw = self.contract.model_kwargs(ids, ids, mask, self.p, self.contract.to_model_cache(kv))
        return self.model(**kw, labels=ids).loss


class Harness:
    name = "harness"

    def __init__(self, model, spec, p: int):
        import harness

        self.pm = harness.prefix_tune(model, p, spec=spec)

    def parameters(self):
        return list(self.pm.encoder.parameters())

    def loss(self, ids, mask):
        return self.pm(ids, attention_mask=mask, labels=ids).loss


class Peft:
    name = "peft"

    def __init__(self, model, spec, p: int):
        from harness.reporting.results import library_versions

        expected = spec.expected_failure("peft", "train", "default", spec.build.code_source, library_versions())
        if expected is not None:
            raise NotApplicable(f"the spec declares PEFT failing here: {' '.join(expected.reason.split())[:160]}")
        from peft import PrefixTuningConfig, get_peft_model

        self.model = get_peft_model(model, PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=p))

    def parameters(self):
        return [p for p in self.model.prompt_encoder.parameters() if p.requires_grad]

    def loss(self, ids, mask):
        return self.model(input_ids=ids, attention_mask=mask, labels=ids).loss


def make_variants(names, model, spec, p: int) -> tuple[list, dict]:
    """The variants asked for, on one shared model (harness first: its fix hooks serve the limit too)."""
    built, skipped = [], {}
    has_harness = "harness" in names
    for name in [n for n in VARIANTS if n in names]:
        try:
            if name == "limit":
                built.append(Limit(model, spec, p, fixes=not has_harness))
            elif name == "harness":
                built.append(Harness(model, spec, p))
            else:
                built.append(Peft(model, spec, p))
        except NotApplicable as e:
            skipped[name] = str(e)
    return built, skipped


# ----------------------------------------------------------------------------- timing
def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def step(variant, ids, mask) -> None:
    for prm in variant.parameters():
        prm.grad = None
    variant.loss(ids, mask).backward()


def timed_step(variant, ids, mask, device: str) -> float:
    for prm in variant.parameters():
        prm.grad = None
    _sync(device)
    t0 = time.perf_counter()
    variant.loss(ids, mask).backward()
    _sync(device)
    return time.perf_counter() - t0


def check_runs(variants, skipped, ids, mask, device) -> list:
    """One step each; a variant that raises (PEFT on a model it cannot feed) becomes n/a."""
    ok = []
    for v in variants:
        try:
            step(v, ids, mask)
            grads = [p.grad for p in v.parameters()]
            if not grads or any(g is None or not bool(g.abs().sum() > 0) for g in grads):
                raise RuntimeError("the prefix got no gradient")
            ok.append(v)
        except Exception as e:  # noqa: BLE001 - any failure of a foreign adapter is its n/a
            if v.name != "peft":
                raise
            skipped[v.name] = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
    return ok


def time_variants(variants, ids, mask, sizes: Sizes, device: str) -> dict[str, list[float]]:
    for _ in range(sizes.warmup):
        for v in variants:
            step(v, ids, mask)
    times = {v.name: [] for v in variants}
    for i in range(sizes.steps):
        k = i % len(variants)  # rotate the order: no variant always runs first after a pause
        for v in variants[k:] + variants[:k]:
            times[v.name].append(timed_step(v, ids, mask, device))
    return times


# ----------------------------------------------------------------------------- memory
def measure_memory(variant, ids, mask, sizes: Sizes, device: str) -> dict:
    """Peak memory the steps add over what is live before them (after a warm-up step: lazy one-time
    allocations are not the method's). Every step allocates the same, so a few steps show the peak."""
    import torch

    step(variant, ids, mask)
    for prm in variant.parameters():
        prm.grad = None
    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        for _ in range(MEMORY_STEPS):
            step(variant, ids, mask)
        torch.cuda.synchronize()
        return {"peak_bytes": torch.cuda.max_memory_allocated() - base, "method": "cuda max_memory_allocated"}
    base = rss_bytes()
    method = "peak RSS (VmHWM reset)" if reset_peak_rss() else "peak RSS since start (ru_maxrss)"
    for _ in range(MEMORY_STEPS):
        step(variant, ids, mask)
    return {"peak_bytes": peak_rss_bytes() - base, "method": method}


def memory_in_subprocesses(names: list[str], argv: list[str]) -> dict[str, dict]:
    """Run each variant alone in a fresh interpreter, all at once (a peak RSS or a CUDA allocator
    peak is per process, so they do not disturb one another; only the timing runs alone). glibc's
    mmap threshold is pinned so large tensors are mapped and unmapped: RSS follows the live
    tensors instead of a heap that only grows."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    procs = {name: subprocess.Popen([sys.executable, "-m", "benchmarks.train_step", *argv, "--memory-of", name],
                                    cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in names}
    results = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate()
        line = next((ln for ln in reversed(stdout.splitlines()) if ln.startswith("MEMORY ")), None)
        if line is not None:
            results[name] = json.loads(line[len("MEMORY "):])
        else:
            tail = (stderr or stdout).strip().splitlines()[-3:]
            results[name] = {"peak_bytes": None, "method": "failed", "error": " | ".join(tail)}
    return results


# ----------------------------------------------------------------------------- main
def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.train_step", description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", default="llama", help="spec name in model_specs/ (default llama)")
    ap.add_argument("--quick", action="store_true", help="small sizes (under a minute on 2 cores)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--dtype", default="float32", choices=DTYPES)
    for field in Sizes.__dataclass_fields__:
        ap.add_argument(f"--{field}", type=int, default=None, help=f"override the {field} size")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of limit,harness,peft")
    ap.add_argument("--no-memory", action="store_true", help="skip the per-variant memory processes")
    ap.add_argument("--no-save", action="store_true", help="do not append to results/bench/")
    ap.add_argument("--memory-of", default=None, help=argparse.SUPPRESS)  # internal: one variant's memory run
    args = ap.parse_args(argv)
    sizes = QUICK if args.quick else Sizes()
    sizes = Sizes(**{k: (getattr(args, k) if getattr(args, k) is not None else v) for k, v in asdict(sizes).items()})
    if sizes.steps < 12 and args.memory_of is None:
        ap.error(f"--steps {sizes.steps}: the ratios are pairwise medians of at least 12 steps")
    return args, sizes


def _setup(args, sizes, names):
    import torch

    from harness.core.inputs import make_inputs
    from harness.core.spec import SPEC_DIR, load_spec

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here. Fix: run on a GPU machine or drop --device")
    path = SPEC_DIR / f"{args.spec}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in SPEC_DIR.glob("*.yaml")))
        raise SystemExit(f"--spec {args.spec}: no {path}. Fix: one of {known}")
    spec = load_spec(path)
    dtype = getattr(torch, args.dtype)
    model, dims = build(spec, sizes, args.device, dtype)
    gen = torch.Generator().manual_seed(0)
    ids, mask = make_inputs(spec, model.config, sizes.batch, sizes.seq, gen, args.device)
    variants, skipped = make_variants(names, model, spec, sizes.prefix)
    if args.memory_of is None:  # a memory process runs only variants the timing process saw run
        variants = check_runs(variants, skipped, ids, mask, args.device)
    return spec, model, dims, ids, mask, variants, skipped


def main(argv=None) -> int:
    args, sizes = parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    if args.memory_of:
        _, _, _, ids, mask, variants, skipped = _setup(args, sizes, [args.memory_of])
        result = (measure_memory(variants[0], ids, mask, sizes, args.device) if variants
                  else {"peak_bytes": None, "method": "n/a", "error": skipped.get(args.memory_of, "")})
        print("MEMORY " + json.dumps(result), flush=True)
        return 0

    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    bad = [n for n in names if n not in VARIANTS]
    if bad or "harness" not in names:
        raise SystemExit(f"--variants {args.variants}: choose among {', '.join(VARIANTS)}, harness included")
    spec, model, dims, ids, mask, variants, skipped = _setup(args, sizes, names)
    arch = type(model).__name__
    times = time_variants(variants, ids, mask, sizes, args.device)
    memory = {}
    if not args.no_memory:
        del variants, model
        gc.collect()
        memory = memory_in_subprocesses(list(times), argv)

    def ratio(a, b):
        return pairwise_median(times[a], times[b]) if a in times and b in times else None

    def mem_ratio(a, b):
        pa, pb = (memory.get(a) or {}).get("peak_bytes"), (memory.get(b) or {}).get("peak_bytes")
        return pa / pb if pa is not None and pb else None

    ratios = {"harness/limit": ratio("harness", "limit"), "harness/peft": ratio("harness", "peft"),
              "mem harness/peft": mem_ratio("harness", "peft")}
    env = environment(args.device, args.dtype)
    print(f"train step: spec {spec.name} ({arch}), {dims.layers} layers, hidden {sizes.hidden}, {sizes.heads} heads / "
          f"{dims.heads} KV heads, head dim {dims.head_dim}, seq {sizes.seq}, batch {sizes.batch}, P {sizes.prefix}; "
          f"{args.device} {args.dtype}, {env['torch_threads']} threads; pairwise medians of {sizes.steps} steps after "
          f"{sizes.warmup} warm-up (load average {env['load_average']:.2f})")
    print(f"{'variant':<9} {'median step ms':>15} {'min ms':>9} {'/limit':>8} {'peak mem MiB':>13}  note")
    rows = []
    for name in VARIANTS:
        if name not in names:
            continue
        t = times.get(name)
        mem = memory.get(name, {})
        peak = mem.get("peak_bytes")
        med = sorted(t)[len(t) // 2] if t else None
        vs_limit = ratio(name, "limit")
        note = skipped.get(name, "") or mem.get("error", "")
        print(f"{name:<9} {(f'{med * 1e3:.1f}' if t else 'n/a'):>15} {(f'{min(t) * 1e3:.1f}' if t else 'n/a'):>9} "
              f"{fmt_ratio(vs_limit):>8} {(f'{peak / 2**20:.1f}' if peak is not None else 'n/a'):>13}  {note}")
        rows.append({"benchmark": "train_step", "spec": spec.name, "variant": name, "status": "ok" if t else "n/a",
                     "note": note, "median_step_s": med, "min_step_s": min(t) if t else None,
                     "step_times_s": json.dumps(t) if t else None, "ratio_to_limit": vs_limit,
                     "peak_mem_bytes": peak, "memory_method": mem.get("method"),
                     "ratio_harness_limit": ratios["harness/limit"], "ratio_harness_peft": ratios["harness/peft"],
                     "mem_ratio_harness_peft": ratios["mem harness/peft"], "quick": args.quick,
                     "kv_layers": dims.layers, "kv_heads": dims.heads, "head_dim": dims.head_dim,
                     **asdict(sizes), **env})
    if not args.no_save:
        print(f"appended to {append_parquet('train_step', rows).relative_to(ROOT)}")
    print(f"ratios harness/limit={fmt_ratio(ratios['harness/limit'])} harness/peft={fmt_ratio(ratios['harness/peft'])} "
          f"mem harness/peft={fmt_ratio(ratios['mem harness/peft'], 4)}")  # the prefix is ~1 % of a step's memory
    return 0


if __name__ == "__main__":
    sys.exit(main())
