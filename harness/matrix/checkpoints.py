"""Real checkpoints instead of tiny random models, when the user has them locally.

``--checkpoint SPEC=PATH`` (repeatable) names a local folder; ``--checkpoints`` finds every id a
selected spec lists under ``build.checkpoints`` in the local Hugging Face cache (config and
weights both present; nothing is ever downloaded). Either one replaces the tiny models: every cell
of a spec with a checkpoint runs once per checkpoint, on a model row ``<spec>@<name>``
(``llama@Llama-2-7b-hf``), and specs without one are left out. The row records the checkpoint id
and revision (the HF snapshot's commit, or a content digest of a plain folder).

Checkpoints of remote-code families (Qwen v1, ChatGLM) run the real code in the checkpoint folder:
only with the opt-in (``--trust-remote-code``), and only when that code is the spec's pinned code
(sha256 of each file); otherwise the cell is a ``skip`` (no opt-in) or an ``error`` naming the file.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path

from harness.core.models import WEIGHT_FILES, build_model, load_checkpoint

from .cells import TRUST_ENV, SelectionError


@dataclass(frozen=True)
class Checkpoint:
    spec: str  # the spec whose contract the checkpoint follows
    id: str  # the hub id, or the folder's path for a plain folder
    path: str  # the local folder holding config.json and the weights
    revision: str  # the HF snapshot commit, or "sha256:<12 hex>" of a plain folder's files

    @property
    def label(self) -> str:
        """The model row's suffix: the id's last part (``meta-llama/Llama-2-7b-hf`` -> ``Llama-2-7b-hf``)."""
        name = self.id.rstrip("/").rsplit("/", 1)[-1]
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "checkpoint"


def add_options(group) -> None:
    group.addoption("--checkpoint", action="append", default=[], metavar="SPEC=PATH",
                    help="run the matrix on a real checkpoint in a local folder instead of the tiny model "
                         "(repeatable; e.g. --checkpoint llama=/models/Llama-2-7b-hf)")
    group.addoption("--checkpoints", action="store_true",
                    help="run on every checkpoint the selected specs list (build.checkpoints) that is in "
                         "the local Hugging Face cache; never downloads")


# ----------------------------------------------------------------------------- finding them
def has_weights(folder: Path) -> bool:
    return any((folder / name).is_file() for name in WEIGHT_FILES)


def folder_revision(folder: Path) -> str:
    """A plain folder's revision: an HF snapshot's commit when the folder is one, else a digest of
    config.json and the weight files' names and sizes (hashing gigabytes of weights would take
    minutes; a re-saved checkpoint changes sizes or config)."""
    if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith("models--"):
        return folder.name
    h = hashlib.sha256((folder / "config.json").read_bytes())
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.suffix in (".safetensors", ".bin", ".json"):
            h.update(f"{f.name}:{f.stat().st_size}".encode())
    return "sha256:" + h.hexdigest()[:12]


def from_options(items: list[str], specs) -> list[Checkpoint]:
    """``--checkpoint SPEC=PATH`` values; SelectionError (a usage error) naming the fix."""
    known = {s.name for s in specs}
    found = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise SelectionError(f"--checkpoint {item!r}: write SPEC=PATH, e.g. --checkpoint llama=/models/Llama-2-7b-hf")
        if name not in known:
            raise SelectionError(f"--checkpoint {item!r}: no spec {name!r} among the selected specs "
                                 f"({', '.join(sorted(known))})")
        folder = Path(path).expanduser()
        if not (folder / "config.json").is_file():
            raise SelectionError(f"--checkpoint {item!r}: {folder} has no config.json (point it at a folder "
                                 f"saved with save_pretrained, or a snapshot in the HF cache)")
        if not has_weights(folder):
            raise SelectionError(f"--checkpoint {item!r}: {folder} holds no weights (one of {', '.join(WEIGHT_FILES)})")
        found.append(Checkpoint(name, str(folder), str(folder.resolve()), folder_revision(folder)))
    return found


def discover(specs, cache_dir: str | os.PathLike | None = None) -> list[Checkpoint]:
    """Every ``build.checkpoints`` id of ``specs`` whose config and weights are in the local HF cache
    (``cache_dir``, default the user's), at the revision ``refs/main`` points to."""
    from huggingface_hub import try_to_load_from_cache

    found = []
    for spec in specs:
        for repo in spec.build.checkpoints:
            hit = try_to_load_from_cache(repo, "config.json", cache_dir=cache_dir)
            if not isinstance(hit, str):  # None (not cached) or a "known missing" marker
                continue
            folder = Path(hit).parent  # <cache>/models--org--name/snapshots/<commit>/
            if has_weights(folder):
                found.append(Checkpoint(spec.name, repo, str(folder), folder.name))
    return found


def select(option, specs, cells):
    """The cells to run: the tiny-model cells as given, or (with --checkpoint/--checkpoints) one copy
    of each cell per checkpoint of its spec. SelectionError when the options find nothing."""
    if not option.checkpoint and not option.checkpoints:
        return cells
    found = from_options(option.checkpoint, specs)
    if option.checkpoints:
        named = {c.spec for c in found}  # a folder given for a spec wins over its cached ids
        found += [c for c in discover(specs) if c.spec not in named]
        if not found:
            from huggingface_hub import constants

            listed = sorted({i for s in specs for i in s.build.checkpoints})
            raise SelectionError(f"--checkpoints: none of the {len(listed)} checkpoint ids the selected specs list "
                                 f"is in the local HF cache ({constants.HF_HUB_CACHE}); download one yourself, or "
                                 f"name a folder with --checkpoint SPEC=PATH")
    out, seen = [], set()
    for ckpt in found:
        for cell in cells:
            if cell.spec.name != ckpt.spec:
                continue
            new = replace(cell, code_source=code_source_for(cell.spec), checkpoint=ckpt)
            if new.id not in seen:  # --code-source all gives a remote-code spec two sources: one checkpoint
                seen.add(new.id)
                out.append(new)
    return out


def code_source_for(spec) -> str:
    """Whose code loads the checkpoint: transformers' class, or the real remote code in the folder
    (our reference models only model the cache contract; they do not load real weights)."""
    return "remote" if spec.build.code_source != "transformers" and spec.remote is not None else spec.build.code_source


# ----------------------------------------------------------------------------- running them
def skip_reason(cell) -> str | None:
    """Why a checkpoint cell cannot run here, or None. Pinned code is checked when building, so a
    folder with other code is an ``error`` that names the file, not a silent skip."""
    spec = cell.spec
    if cell.code_source == "transformers":
        return None
    if cell.code_source != "remote":
        return f"{spec.name}: a real checkpoint needs transformers' class or the real remote code; the spec has neither"
    if os.environ.get(TRUST_ENV) != "1":
        return (f"the checkpoint {cell.checkpoint.id} runs its remote code: opt in with --trust-remote-code or "
                f"{TRUST_ENV}=1")
    import transformers
    from packaging.version import Version

    if spec.remote.transformers is not None and Version(transformers.__version__) not in spec.remote.transformers:
        return (f"{spec.remote.repo} remote code loads under transformers{spec.remote.transformers}; this is "
                f"{transformers.__version__} (use the tox env 'old')")
    return None


def build(cell, device: str, dtype):
    """The cell's base model: the checkpoint when it has one, else the spec's tiny model."""
    ckpt = getattr(cell, "checkpoint", None)
    if ckpt is None:
        return build_model(cell.spec, cell.code_source, device, dtype)
    remote = cell.code_source == "remote"
    if remote:
        # The opt-in was checked (skip_reason); the code must also be the spec's pinned code.
        from harness.core.remote import unpinned

        why = unpinned(Path(ckpt.path), cell.spec.remote)
        if why:
            raise RuntimeError(why)
    return load_checkpoint(ckpt.path, device, dtype, trust_remote_code=remote)


def count_params(cell) -> int | None:
    """Parameters of the cell's model, from its config on the meta device (devices.too_large)."""
    from . import devices

    ckpt = getattr(cell, "checkpoint", None)
    if ckpt is None:
        from harness.core.models import resolve_class

        if cell.code_source == "remote":
            return None
        config = resolve_class(cell.code_source, cell.spec.build.config_class)(**cell.spec.build.config)
        model_cls = resolve_class(cell.code_source, cell.spec.build.model_class)
        return devices.count_params(lambda: model_cls(config))
    if cell.code_source == "remote":
        return None  # building the remote class needs its code imported: the real load decides
    import transformers

    config = transformers.AutoConfig.from_pretrained(ckpt.path, local_files_only=True)
    return devices.count_params(lambda: transformers.AutoModelForCausalLM.from_config(config))
