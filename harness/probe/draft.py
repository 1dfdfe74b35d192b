"""The draft spec: a dict in the format of model_specs/README.md, and its YAML text.

Everything measured goes into the fields; what the probe could not tell, and the evidence behind
a choice, goes into comments at the top, so a reader sees at once what still needs a person.
"""
from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import yaml

from . import shrink as S


def num_virtual_tokens(heads: int | None) -> int:
    """3, or 5 where 3 equals the KV heads: P == heads hides a wrong layout (it concatenates
    silently on the heads axis), so the draft never picks it."""
    return 5 if heads == 3 else 3


def _expr(items: list):
    items = [str(x) if not isinstance(x, int) else x for x in items]
    return items[0] if len(items) == 1 else items


def make_draft(*, family: str, model_types: list[str], description: str, code_source: str, model_class: str,
               config_class: str, config: dict, kv, argument: str, conventions: tuple[str, str],
               heads_value: int, remote: dict | None = None, config_has: list | None = None,
               v_head_dim: bool = False) -> dict:
    """``v_head_dim``: V's last dim differs from K's (MLA latent caches): write kv.v_head_dim too."""
    draft = {
        "family": family,
        "description": description,
        "match": {"model_type": model_types, **({"config_has": config_has} if config_has else {})},
        "build": {"code_source": code_source, "class": model_class, "config_class": config_class,
                  "config": config, "seed": 0},
    }
    if remote:
        draft["remote"] = remote
    draft["kv"] = {"layout": list(kv.layout), "concat_axis": kv.concat_axis, "layers": _expr(kv.layers),
                   "heads": _expr(kv.heads), "head_dim": _expr(kv.head_dim)}
    if v_head_dim:
        draft["kv"]["v_head_dim"] = _expr(kv.v_head_dim)
    draft["cache"] = {"container": kv.container, "argument": argument}
    draft["conventions"] = {"attention_mask": conventions[0], "position_ids": conventions[1]}
    draft["inputs"] = {"vocab_limit": S.SPECIAL_BASE}  # special token ids sit at 240..255
    if getattr(kv, "inserts", ()):  # tokens the model's code looks for in every row
        draft["inputs"].update(insert_tokens=list(kv.inserts), insert_at=kv.insert_at)
    draft["matrix"] = {"num_virtual_tokens": num_virtual_tokens(heads_value)}
    return draft


def make_not_applicable_draft(*, family: str, model_types: list[str], model_class: str, config_class: str,
                              code_source: str, config: dict, reason: str) -> dict:
    """A spec for a model without an attention KV cache: its build and the measured reason, so the matrix
    gives it one ``n/a`` row (and `validate` measures the claim again)."""
    return {
        "family": family,
        "description": f"{model_class} ({code_source}), drafted by prefix-compat probe: no attention KV cache",
        "match": {"model_type": model_types},
        "build": {"code_source": code_source, "class": model_class, "config_class": config_class, "config": config},
        "not_applicable": reason,
    }


def to_yaml(draft: dict, comments: list[str]) -> str:
    head = "".join(f"# {line}\n" for c in comments for line in c.splitlines())
    body = yaml.safe_dump(draft, sort_keys=False, default_flow_style=None, width=110)
    return head + body


# ----------------------------------------------------------------------------- remote-code folders
def code_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every *.py file directly in the folder (what harness/core/remote.py pins)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.py"))}


def git_revision(folder: Path) -> tuple[str | None, str]:
    """(commit, why not): the folder's HEAD commit when it is a clean git checkout."""
    try:
        top = subprocess.run(["git", "-C", str(folder), "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, timeout=10)
        if top.returncode != 0:
            return None, "the folder is not a git checkout"
        head = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return None, "the git checkout has no commit"
        dirty = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--", "."], capture_output=True,
                               text=True, timeout=10).stdout.strip()
        if dirty:
            return None, f"the git checkout has uncommitted changes ({dirty.splitlines()[0]} ...)"
        return head.stdout.strip(), ""
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"git could not be run ({e})"
