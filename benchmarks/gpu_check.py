"""The GPU check: one prepared run for a session that has a GPU (docs/GPU.md), under 8 minutes.

    python -m benchmarks.gpu_check [--out results/bench/gpu-check] [--budget 420]

1. The seed families (LLaMA, Qwen1.5, Qwen v1, ChatGLM-6B/2/3) at their real sizes (6-7B
   parameters) with random weights, in bfloat16 on CUDA, through ``pytest -n auto harness/``:
   every check with our adapter, and naive and PEFT on LLaMA. ``-n auto`` must start one worker per
   GPU; every row must carry the GPU's name and peak memory.
2. LLaMA at 70B: larger than one GPU's free memory, so its cells must be ``skip`` with both figures.
3. Any real checkpoint in the local HF cache (``--checkpoints``): every check, and the text task.

Writes ``summary.json`` and ``report.md`` under --out and prints what a doc needs: per family the
statuses, seconds, peak GPU memory and tokens per second. Exit 1 when something the GPU path
promises did not hold (a worker count other than the GPU count, a row without GPU columns, the 70B
model not skipped); the cells' own verdicts are data, not failures of this script.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent

# Published sizes of each family's 6-7B model (config.json of the hub repos); weights stay random.
REAL_SIZES = {
    "llama": {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
              "num_attention_heads": 32, "num_key_value_heads": 32, "max_position_embeddings": 4096},
    "qwen1.5": {"vocab_size": 151936, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                "num_attention_heads": 32, "num_key_value_heads": 32, "max_position_embeddings": 32768},
    "qwen": {"vocab_size": 151936, "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
             "kv_channels": 128, "intermediate_size": 22016, "seq_length": 8192, "max_position_embeddings": 8192,
             "fp32": False, "bf16": True},
    "chatglm": {"vocab_size": 130528, "hidden_size": 4096, "num_layers": 28, "num_attention_heads": 32,
                "inner_hidden_size": 16384, "max_sequence_length": 2048, "bos_token_id": 130004,
                "eos_token_id": 130005, "mask_token_id": 130000, "gmask_token_id": 130001, "pad_token_id": 3,
                "initializer_range": 0.02},
    "chatglm2": {"padded_vocab_size": 65024, "hidden_size": 4096, "num_layers": 28, "num_attention_heads": 32,
                 "kv_channels": 128, "multi_query_group_num": 2, "ffn_hidden_size": 13696, "seq_length": 32768},
    "chatglm3": {"padded_vocab_size": 65024, "hidden_size": 4096, "num_layers": 28, "num_attention_heads": 32,
                 "kv_channels": 128, "multi_query_group_num": 2, "ffn_hidden_size": 13696, "seq_length": 8192},
}
TOO_LARGE = ("llama70b", "llama", {"vocab_size": 32000, "hidden_size": 8192, "intermediate_size": 28672,
                                   "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8,
                                   "max_position_embeddings": 4096})
GPU_COLUMNS = ("gpu_name", "gpu_peak_memory_mib")


def write_specs(folder: Path, tiny: bool = False) -> None:
    """Copies of the seed specs at real sizes (and the 70B one) under ``folder``; ``tiny``: at the
    specs' own sizes (a dry run of this script on the CPU)."""
    for name, sizes in list(REAL_SIZES.items()) + [(TOO_LARGE[0], TOO_LARGE[2])]:
        source = TOO_LARGE[1] if name == TOO_LARGE[0] else name
        spec = yaml.safe_load((ROOT / "model_specs" / f"{source}.yaml").read_text())
        if not tiny:
            spec["build"]["config"].update(sizes)
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


def pytest(args: list[str], budget: float, log: Path) -> tuple[int, float]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "harness"), *args]
    started = time.perf_counter()
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        try:
            rc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, timeout=budget).returncode
        except subprocess.TimeoutExpired:
            rc = 124
    return rc, time.perf_counter() - started


def rows(results_dir: Path, run_id: str):
    sys.path.insert(0, str(ROOT))
    from harness.reporting import results

    return results.read_run(results.runs_root(results_dir) / run_id)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/bench/gpu-check")
    ap.add_argument("--budget", type=float, default=420.0, help="seconds for everything (default 7 minutes)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--dry-run-on-cpu", action="store_true",
                    help="tiny models on the CPU: checks this script, not the GPU path (no GPU promises checked)")
    args = ap.parse_args(argv)
    import torch

    dry = args.dry_run_on_cpu
    if not dry and not torch.cuda.is_available():
        print("gpu_check: this torch sees no CUDA device; nothing to check (--dry-run-on-cpu checks the script)")
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log, results_dir = out / "pytest.log", out / "results"
    deadline = time.perf_counter() + args.budget
    gpus = torch.cuda.device_count() if not dry else 0
    summary = {"gpus": [torch.cuda.get_device_name(i) for i in range(gpus)], "torch": torch.__version__,
               "cuda": torch.version.cuda, "runs": {}, "problems": []}
    common = ["-n", "auto" if not dry else "0", "--device", "cuda" if not dry else "cpu", "--dtype", "bfloat16", "--steps", str(args.steps),
              "--cell-timeout", "120", "--results-dir", str(results_dir)]
    with tempfile.TemporaryDirectory() as tmp:
        specs = Path(tmp)
        write_specs(specs, tiny=dry)
        # (name, options, share of the budget it may take at most): the cheap skip first, so a slow
        # family cannot starve it
        plan = [("too-large", ["--specs", str(specs), "--models", TOO_LARGE[0], "--adapters", "harness",
                               "--checks", "accepts"], 0.15),
                ("families", ["--specs", str(specs), "--models", ",".join(REAL_SIZES), "--adapters", "harness"], 0.55),
                ("llama-adapters", ["--specs", str(specs), "--models", "llama", "--adapters", "naive,peft"], 0.2),
                ("checkpoints", ["--checkpoints", "--adapters", "harness"], 1.0)]
        for name, extra, share in plan:
            left = min(deadline - time.perf_counter(), share * args.budget)
            if left < 30:
                summary["problems"].append(f"{name}: not run, the budget was spent")
                continue
            run_id = f"gpu-check-{name}-{time.strftime('%Y%m%d-%H%M%S')}"
            rc, secs = pytest(common + ["--run-id", run_id] + extra, left, log)
            summary["runs"][name] = {"run_id": run_id, "exit": rc, "seconds": round(secs, 1)}
            if name == "checkpoints" and rc == 4:
                summary["runs"][name]["note"] = "no checkpoint of a spec in the local HF cache"
                continue
            df = rows(results_dir, run_id)
            summary["runs"][name]["cells"] = [
                {k: (None if v != v else v) for k, v in r.items()} for r in
                df[["model", "adapter", "check", "status", "duration_s", "gpu_name", "gpu_peak_memory_mib",
                    "train_tokens_per_s", "worker", "message"]].to_dict("records")]
            if dry:
                continue
            ran = df[df["status"] != "skip"]
            workers = sorted(set(ran["worker"].dropna()))
            if len(workers) > gpus:
                summary["problems"].append(f"{name}: {len(workers)} workers on {gpus} GPU(s): {workers}")
            missing = ran[ran[list(GPU_COLUMNS)].isna().any(axis=1)]
            if len(missing):
                summary["problems"].append(f"{name}: {len(missing)} row(s) without GPU name or peak memory")
            if name == "too-large" and not (len(df) and (df["status"] == "skip").all()
                                            and df["message"].str.contains("too large for one GPU").all()):
                summary["problems"].append(f"too-large: the 70B model was not skipped: {df['status'].tolist()}")
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    for name, run in summary["runs"].items():
        print(f"== {name}: exit {run['exit']}, {run['seconds']} s {run.get('note', '')}")
        for c in run.get("cells", []):
            mem = f"{c['gpu_peak_memory_mib'] / 1024:.1f} GiB" if c["gpu_peak_memory_mib"] else "-"
            tps = f"{c['train_tokens_per_s']:,.0f} tok/s" if c["train_tokens_per_s"] else ""
            print(f"{c['model']:<22} {c['adapter']:<8} {c['check']:<12} {c['status']:<12} "
                  f"{(c['duration_s'] or 0):6.1f} s  {mem:>9} {tps}")
    for p in summary["problems"]:
        print(f"PROBLEM: {p}")
    return 1 if summary["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
