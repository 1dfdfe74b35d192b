"""Real checkpoints on the CPU: a tiny LLaMA and a byte-level tokenizer this test makes and saves
itself with save_pretrained (nothing downloaded), found by --checkpoint and in a fake local HF
cache, and the train check's text task on it (which a broken adapter fails)."""
import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from harness.core.spec import load_spec
from harness.matrix import checkpoints, text_task
from harness.matrix.bench import Bench, Settings
from harness.matrix.cells import SelectionError, build_cells
from harness.matrix.data import make_text_task
from harness.reporting import results

ROOT = Path(__file__).resolve().parent.parent
LLAMA = load_spec(ROOT / "model_specs" / "llama.yaml")
QWEN = load_spec(ROOT / "model_specs" / "qwen.yaml")
HUB_ID = LLAMA.build.checkpoints[0]  # meta-llama/Llama-2-7b-hf
REVISION = "0123456789abcdef0123456789abcdef01234567"


def _byte_tokenizer():
    """A byte-level tokenizer with exactly 256 ids (no merges), built here without any download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def _other_format(row: dict) -> dict:
    first, last, year, city = re.match(r"name: (\S+) (\S+) \| born: (\d+) \| city: (\S+)", row["prompt"]).groups()
    return {"prompt": row["prompt"], "target": f" {first} {last} of {city}, {year}\n"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny LLaMA "pretrained" for 150 steps on the task's prompts with answers in another format:
    it knows the records, not the format the prefix must teach (a random-weight model's logits are
    too flat for any prefix to move them 25%)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = _byte_tokenizer()
    c = LLAMA.build.config
    model = LlamaForCausalLM(LlamaConfig(**c))
    rows = [_other_format(r) for r in text_task.examples()[0]]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        pick = [rows[i] for i in torch.randint(0, len(rows), (16,), generator=g).tolist()]
        ids, mask, _ = text_task.encode(tok, pick, "cpu", c["vocab_size"])
        loss = text_task.target_loss(model(input_ids=ids, attention_mask=mask).logits, ids, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
    folder = tmp_path_factory.mktemp("ckpt") / "tiny-llama"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _fake_hub_cache(root: Path, checkpoint: Path, repo: str = HUB_ID) -> Path:
    """The local HF cache layout: models--org--name/{refs/main, snapshots/<commit>/...}."""
    repo_dir = root / ("models--" + repo.replace("/", "--"))
    shutil.copytree(checkpoint, repo_dir / "snapshots" / REVISION)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(REVISION)
    return repo_dir / "snapshots" / REVISION


# ----------------------------------------------------------------------------- the task's data
def test_the_shipped_task_is_what_the_script_writes_with_held_out_prompts_unseen():
    assert text_task.DATA.read_text() == make_text_task.text()
    train, held = text_task.examples()
    assert (len(train), len(held)) == (320, 80)
    assert not {r["prompt"] for r in held} & {r["prompt"] for r in train}


def test_a_malformed_task_file_names_the_line(tmp_path):
    bad = tmp_path / "task.jsonl"
    bad.write_text('{"prompt": "a", "target": "b", "split": "train"}\n{"prompt": "x"}\n')
    with pytest.raises(ValueError, match=r"task.jsonl:2: expected \{prompt, target, split\}"):
        text_task.examples(bad)


# ----------------------------------------------------------------------------- finding checkpoints
def test_checkpoint_options_name_what_is_wrong(tmp_path, checkpoint):
    (tmp_path / "no_weights").mkdir()
    (tmp_path / "no_weights" / "config.json").write_text("{}")
    for item, problem in ((str(checkpoint), "write SPEC=PATH"), (f"lama={checkpoint}", "no spec 'lama'"),
                          (f"llama={tmp_path}", "has no config.json"),
                          (f"llama={tmp_path / 'no_weights'}", "holds no weights")):
        with pytest.raises(SelectionError, match=problem):
            checkpoints.from_options([item], [LLAMA])
    (ckpt,) = checkpoints.from_options([f"llama={checkpoint}"], [LLAMA])
    assert ckpt.spec == "llama" and ckpt.label == "tiny-llama" and re.fullmatch(r"sha256:[0-9a-f]{12}", ckpt.revision)


def test_discovery_finds_listed_ids_with_weights_in_the_local_cache(tmp_path, checkpoint):
    cache = tmp_path / "hub"
    snapshot = _fake_hub_cache(cache, checkpoint)
    (found,) = checkpoints.discover([LLAMA, QWEN], cache_dir=cache)
    assert (found.spec, found.id, found.revision, Path(found.path)) == ("llama", HUB_ID, REVISION, snapshot)
    assert checkpoints.folder_revision(snapshot) == REVISION
    assert checkpoints.discover([QWEN], cache_dir=cache) == []  # only the ids a spec lists
    (snapshot / "model.safetensors").unlink()  # config alone (e.g. remote code fetched without weights)
    assert checkpoints.discover([LLAMA], cache_dir=cache) == []


def test_checkpoint_cells_replace_the_tiny_ones(checkpoint):
    cells = build_cells([LLAMA, QWEN], "harness", "accepts,train")
    option = SimpleNamespace(checkpoint=[f"llama={checkpoint}"], checkpoints=False)
    picked = checkpoints.select(option, [LLAMA, QWEN], cells)
    assert [c.id for c in picked] == ["llama@tiny-llama-harness-accepts", "llama@tiny-llama-harness-train"]
    assert checkpoints.select(SimpleNamespace(checkpoint=[], checkpoints=False), [LLAMA], cells) == cells


def test_remote_code_checkpoints_run_only_with_the_opt_in(monkeypatch, tmp_path):
    ckpt = checkpoints.Checkpoint("qwen", "Qwen/Qwen-7B", str(tmp_path), REVISION)
    cell = replace(build_cells([QWEN], "harness", "accepts")[0], code_source="remote", checkpoint=ckpt)
    assert checkpoints.code_source_for(QWEN) == "remote"
    monkeypatch.delenv("PREFIX_COMPAT_TRUST_REMOTE_CODE", raising=False)
    assert "--trust-remote-code" in checkpoints.skip_reason(cell)
    monkeypatch.setenv("PREFIX_COMPAT_TRUST_REMOTE_CODE", "1")
    with pytest.raises(RuntimeError, match="is not the code of"):  # opted in, but not the pinned code
        checkpoints.build(cell, "cpu", torch.float32)


def test_checkpoints_option_with_nothing_cached_is_a_usage_error(tmp_path):
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "empty"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", str(ROOT / "harness"),
           "--models", "llama", "--checkpoints", "--results-dir", str(tmp_path / "results")]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 4 and "is in the local HF cache" in done.stderr and str(tmp_path / "empty") in done.stderr


# ----------------------------------------------------------------------------- the text task
def test_the_matrix_runs_on_the_checkpoint_and_the_prefix_learns_the_task(tmp_path, checkpoint):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", str(ROOT / "harness"),
           "--models", "llama", "--adapters", "harness", "--checks", "equivalence,train",
           "--checkpoint", f"llama={checkpoint}", "--results-dir", str(tmp_path / "results"), "--run-id", "ckpt", "--dtype", "float32", "--attn", "sdpa", "--no-mlp-variant"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    df = results.read_run(results.runs_root(tmp_path / "results") / "ckpt").set_index("check")
    assert done.returncode == 0, done.stdout[-3000:]
    train = df.loc["train"]
    assert train["model"] == "llama@tiny-llama" and train["status"] == "pass"
    assert train["threshold"] == text_task.BAR and train["metric"] >= text_task.BAR  # fell by >= 25%
    assert train["train_tokens_per_s"] > 0 and "tokens/s" in train["message"]
    assert train["checkpoint"] == str(checkpoint) and train["checkpoint_revision"].startswith("sha256:")
    assert df.loc["equivalence", "status"] == "pass"  # the other checks run on the real weights too


class _SwappingAttached:
    """The harness adapter handing the model V where K belongs: a wrong adapter the task must catch."""

    def __init__(self, inner):
        self.inner, self.base, self.num_virtual_tokens = inner, inner.base, inner.num_virtual_tokens
        pm = inner.pm
        pm.prefix_cache = lambda b: pm.contract.to_model_cache(pm.encoder(b).flip(1))  # (layers, 2, B, H, P, D)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_an_adapter_that_swaps_k_and_v_fails_the_text_task(checkpoint):
    from harness.matrix.adapters import attach

    ckpt = checkpoints.from_options([f"llama={checkpoint}"], [LLAMA])[0]
    cell = replace(build_cells([LLAMA], "harness", "train")[0], checkpoint=ckpt)
    model = checkpoints.build(cell, "cpu", torch.float32)
    right = text_task.run(Bench(cell, model, Settings(steps=2)))
    assert right.details["start_error"] <= 1e-4  # the control's own measurement on a right adapter
    swapped = Bench(cell, model, Settings(steps=2), attacher=lambda *a: _SwappingAttached(attach(*a)))
    m = text_task.run(swapped)
    assert not m.passed and "does not hand the model the K/V it holds" in m.message
