"""Running the real hub remote code of a family (``code_source = remote``), never downloading it.

The code comes from a local folder (``PREFIX_COMPAT_CODE_DIR_<SPEC>``, e.g.
``PREFIX_COMPAT_CODE_DIR_QWEN=/models/Qwen-7B``) or from the local Hugging Face cache at the
spec's pinned revision. Running it needs the user's opt-in (``PREFIX_COMPAT_TRUST_REMOTE_CODE=1``).
The model is built from the real config.json with the spec's tiny sizes: random weights, no
checkpoint needed.
"""
from __future__ import annotations

import ast
import importlib.util
import json
import os
from pathlib import Path

INSTALL_HINT = 'pip install -e ".[remote]"'


def code_dir_variable(spec_name: str) -> str:
    """``qwen`` -> ``PREFIX_COMPAT_CODE_DIR_QWEN``."""
    return "PREFIX_COMPAT_CODE_DIR_" + spec_name.upper().replace(".", "_").replace("-", "_")


def locate_code(spec) -> tuple[Path | None, str | None]:
    """(folder, None) when the code is here and loadable under this transformers, else (None, why)."""
    import transformers
    from packaging.version import Version

    remote = spec.remote
    var = code_dir_variable(spec.name)
    if remote.transformers is not None and Version(transformers.__version__) not in remote.transformers:
        return None, (f"{remote.repo} remote code loads under transformers{remote.transformers}; "
                      f"this is {transformers.__version__} (use the tox env 'old')")
    folder = os.environ.get(var)
    if folder:
        path = Path(folder)
        if not (path / "config.json").is_file():
            return None, f"{var}={folder} has no config.json: point it at a copy of {remote.repo}"
        why = unpinned(path, remote) or _unrunnable(path, remote)
        return (None, why) if why else (path, None)
    for path in _cached_snapshots(remote):
        if unpinned(path, remote) is None:
            why = _unrunnable(path, remote)
            return (None, why) if why else (path, None)
    return None, (f"{remote.repo} @ {remote.revision[:12]} is not in the local HF cache; set {var} to a "
                  f"local folder with its code, or download it yourself at that revision")


def _unrunnable(path: Path, remote) -> str | None:
    """Why pinned code still cannot load here (None when it can): a file it imports is not in the
    folder, or a package it imports is not installed. Both are otherwise met halfway through
    transformers' loader, as a bare FileNotFoundError or ImportError naming neither the fix nor the spec."""
    files = missing_code_files(path, [n for n in remote.sha256 if n.endswith(".py")])
    if files:
        return (f"{path} lacks {'; '.join(files)}: the code cannot load without it. Copy the file from "
                f"{remote.repo} @ {remote.revision[:12]} into the folder")
    packages = missing_modules(remote.requires)
    if packages:
        return (f"the code of {remote.repo} imports {', '.join(packages)}, not installed here: {INSTALL_HINT} "
                f"(from a checkout) or pip install {' '.join(packages)}")
    return None


def missing_modules(modules) -> list[str]:
    """The importable names in ``modules`` (e.g. ``einops``) that this Python cannot find."""
    missing = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a missing parent package of a dotted name
            found = False
        if not found:
            missing.append(name)
    return missing


def missing_code_files(folder: Path, roots=()) -> list[str]:
    """Files that the code in ``folder`` imports relatively (``from .quantization import quantize``)
    and that are not there, each as ``"quantization.py (imported by modeling_chatglm.py)"``.

    Starts from ``roots`` and the modules config.json's ``auto_map`` names, then follows what they
    import. Every relative import counts, even one inside a function or a ``try``: transformers'
    loader copies each relatively imported file before it runs any of the code, and fails on a
    missing one."""
    folder = Path(folder)
    todo = list(roots) + _auto_map_files(folder)
    seen, missing = set(), []
    while todo:
        name = todo.pop(0)
        if name in seen:
            continue
        seen.add(name)
        file = folder / name
        if not file.is_file():
            continue  # a root that is absent is unpinned's to report
        for module in _relative_imports(file):
            target = module.replace(".", "/") + ".py"
            if (folder / target).is_file():
                todo.append(target)
            elif not (folder / module.replace(".", "/") / "__init__.py").is_file():
                entry = f"{target} (imported by {name})"
                if entry not in missing:
                    missing.append(entry)
    return missing


def _auto_map_files(folder: Path) -> list[str]:
    """``{"AutoConfig": "configuration_qwen.QWenConfig"}`` -> ``["configuration_qwen.py"]``."""
    try:
        auto_map = json.loads((folder / "config.json").read_text()).get("auto_map") or {}
    except (OSError, ValueError, AttributeError):
        return []
    refs = [v for value in auto_map.values() for v in (value if isinstance(value, list) else [value])]
    # "module.Class", or "repo--module.Class" for code that lives in another repo (not this folder's)
    return [ref.rsplit(".", 1)[0] + ".py" for ref in refs if isinstance(ref, str) and "." in ref and "--" not in ref]


def _relative_imports(file: Path) -> list[str]:
    """Modules a file imports from its own folder: ``from .x import y`` -> x, ``from . import x`` -> x."""
    try:
        tree = ast.parse(file.read_text(encoding="utf-8", errors="replace"))
    except SyntaxError:
        return []  # not ours to judge: loading it reports the syntax error itself
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found += [node.module] if node.module else [a.name for a in node.names]
    return found


def _cached_snapshots(remote) -> list[Path]:
    """Local HF-cache snapshots of the repo: the pinned revision first, then any other (the pin is
    also checked by file hashes, since a mirror's commit id is not the hub's)."""
    found = []
    try:
        from huggingface_hub import constants, snapshot_download

        found.append(Path(snapshot_download(remote.repo, revision=remote.revision, local_files_only=True,
                                            cache_dir=constants.HF_HUB_CACHE, allow_patterns=["*.py", "*.json"])))
    except Exception:  # noqa: BLE001 - not cached at that revision
        pass
    if remote.sha256:
        try:
            from huggingface_hub import constants, scan_cache_dir

            for repo in scan_cache_dir(constants.HF_HUB_CACHE).repos:  # read now, not at import
                if repo.repo_id == remote.repo and repo.repo_type == "model":
                    found.extend(Path(r.snapshot_path) for r in repo.revisions)
        except Exception:  # noqa: BLE001 - no cache at all
            pass
    return found


def unpinned(path: Path, remote) -> str | None:
    """Why the code in a folder is not the spec's pinned revision (None when it is), naming every
    file that is missing or differs."""
    import hashlib

    problems = []
    for name, want in sorted(remote.sha256.items()):
        file = path / name
        if not file.is_file():
            problems.append(f"{name} is missing")
            continue
        have = hashlib.sha256(file.read_bytes()).hexdigest()
        if have != want:
            problems.append(f"{name} has sha256 {have[:12]}, the pin says {want[:12]}")
    if not problems:
        return None
    return (f"{path} is not the code of {remote.repo} @ {remote.revision[:12]}: {'; '.join(problems)}. Check out that "
            f"revision, or check this one as a revision of its own: `prefix-compat probe --code-dir {path}` drafts "
            f"a spec pinned to it")


def build_remote_model(spec):
    path, why = locate_code(spec)
    if why:
        raise RuntimeError(why)
    import torch
    import transformers  # every load below is local_files_only; the matrix also sets HF_HUB_OFFLINE=1

    config = transformers.AutoConfig.from_pretrained(str(path), trust_remote_code=True, local_files_only=True)
    for key, value in {**spec.build.config, **spec.remote.config}.items():
        # YAML cannot spell a dtype: "torch.float32" (or a torch_dtype name) becomes one
        if isinstance(value, str) and (value.startswith("torch.") or key == "torch_dtype"):
            value = getattr(torch, value.removeprefix("torch."))
        setattr(config, key, value)
    auto = getattr(transformers, spec.remote.auto_class)
    model = auto.from_config(config, trust_remote_code=True)
    if spec.remote.weights == "reference":
        from .models import build_model

        reference = build_model(spec, spec.build.code_source)
        model.float().load_state_dict(reference.state_dict(), strict=True)
    return model
