"""Prefix checkpoints on disk: ``prefix_model.safetensors`` + ``prefix_config.json`` (the ecosystem's
format: tensors any safetensors reader opens, a config a person can read), and the older
``prefix.pt`` (``torch.save`` of meta + state) for checkpoints written before it.

This module only reads and writes files: building a ``PrefixModel`` from what it reads is
``prefix_model.load_prefix``'s job, so the format has no import of the model code. Every problem is a
``CheckpointError`` naming the file, the field and the fix.
"""
from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path

import torch

FORMAT = "prefix-compat/prefix/1"
WEIGHTS_FILE = "prefix_model.safetensors"
CONFIG_FILE = "prefix_config.json"
LEGACY_FILE = "prefix.pt"
# What a reader needs to rebuild the encoder on a model (type, required?).
FIELDS = {
    "format": (str, True), "spec": (str, True), "layout": (str, True), "fixes": (bool, True),
    "layers": (int, True), "heads": (int, True), "head_dim": (int, True), "num_virtual_tokens": (int, True),
    "projection_dim": (int, False), "token_dim": (int, False), "prefix_positions": (str, False),
}
PREFIX_POSITIONS = ("offset", "none")  # see harness/core/interop/positions.py


class CheckpointError(ValueError):
    """A prefix checkpoint that cannot be read: which file, which field, what is wrong, the fix."""

    def __init__(self, path, field_: str, problem: str, fix: str):
        self.path, self.field, self.problem, self.fix = str(path), field_, problem, fix
        super().__init__(f"{self.path}: {field_}: {problem}. Fix: {fix}")


def library_versions() -> dict:
    """Versions a checkpoint was written under (a reader on other versions can tell)."""
    out = {"python": platform.python_version()}
    for dist in ("prefix-compat", "torch", "transformers", "peft", "safetensors"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


# ----------------------------------------------------------------------------- writing
def write(directory, meta: dict, state: dict[str, torch.Tensor]) -> Path:
    """Write ``state`` (the encoder's tensors) and ``meta`` (FIELDS) into ``directory``; returns the
    weights file. Tensors are saved contiguous, on the CPU, in their own dtype."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {"format": FORMAT, **meta, "tensors": sorted(state), "versions": library_versions()}
    _check_meta(directory / CONFIG_FILE, config)
    weights = directory / WEIGHTS_FILE
    save_file({k: v.detach().to("cpu").contiguous() for k, v in state.items()}, str(weights),
              metadata={"format": FORMAT})
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return weights


# ----------------------------------------------------------------------------- reading
def read(directory) -> tuple[dict, dict[str, torch.Tensor]]:
    """(meta, state) from a checkpoint folder in either format; the safetensors one wins when both
    are there. Raises CheckpointError naming the file and field."""
    directory = Path(directory)
    if (directory / CONFIG_FILE).exists() or (directory / WEIGHTS_FILE).exists():
        return _read_safetensors(directory)
    if (directory / LEGACY_FILE).exists():
        return _read_legacy(directory / LEGACY_FILE)
    where = directory if directory.is_dir() else directory.parent
    raise CheckpointError(directory, "(folder)", f"holds neither {CONFIG_FILE} + {WEIGHTS_FILE} nor {LEGACY_FILE}"
                          if directory.is_dir() else "no such folder",
                          f"pass the folder PrefixModel.save_pretrained wrote (looked in {where})")


def read_json(path: Path, missing_fix: str, source: str) -> dict:
    """A checkpoint's JSON object; a CheckpointError naming the file when it is missing, not JSON, or not
    an object (``missing_fix`` says what to pass instead, ``source`` where a good copy comes from)."""
    if not path.exists():
        raise CheckpointError(path, "(file)", "missing", missing_fix)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(path, "(syntax)", f"not valid JSON ({e})", f"restore the file from {source}") from e
    if not isinstance(data, dict):
        raise CheckpointError(path, "(top level)", "expected a JSON object", f"restore the file from {source}")
    return data


def _read_safetensors(directory: Path):
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    cfg_path, weights = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    meta = read_json(cfg_path, "copy the whole folder save_pretrained wrote", "the save")
    if not weights.exists():
        raise CheckpointError(weights, "(file)", "missing", "copy the whole folder save_pretrained wrote")
    _check_meta(cfg_path, meta)
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(weights, "(file)", f"not a readable safetensors file ({e})",
                              "the file is damaged or truncated: save the prefix again") from e
    listed = meta.get("tensors")
    if listed is not None and sorted(listed) != sorted(state):
        raise CheckpointError(weights, "tensors", f"holds {sorted(state)}, {CONFIG_FILE} lists {sorted(listed)}",
                              "the two files come from different saves: copy both from one save_pretrained")
    return meta, state


def _read_legacy(path: Path):
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a damaged pickle
        raise CheckpointError(path, "(file)", f"not a readable torch checkpoint ({type(e).__name__}: {e})",
                              "the file is damaged or truncated: save the prefix again") from e
    if not isinstance(blob, dict) or not {"meta", "state"} <= set(blob):
        raise CheckpointError(path, "(top level)", "expected a dict with 'meta' and 'state'",
                              "pass a prefix.pt written by PrefixModel.save_prefix")
    if not isinstance(blob["meta"], dict) or not isinstance(blob["state"], dict):
        raise CheckpointError(path, "meta", "expected 'meta' and 'state' to be dicts",
                              "pass a prefix.pt written by PrefixModel.save_prefix")
    meta = {"format": FORMAT, **blob["meta"]}  # the old file had no format field: it is this one's ancestor
    _check_meta(path, meta)
    return meta, blob["state"]


def _check_meta(path, meta) -> None:
    if not isinstance(meta, dict):
        raise CheckpointError(path, "(top level)", f"expected a JSON object, got {type(meta).__name__}",
                              "restore the file from the save")
    for name, (kind, required) in FIELDS.items():
        if name not in meta or meta[name] is None:
            if required:
                raise CheckpointError(path, name, "missing", f"add '{name}' (see harness/core/checkpoint.py FIELDS)")
            continue
        value = meta[name]
        if not isinstance(value, kind) or (kind is int and (isinstance(value, bool) or value <= 0)):
            want = "a positive integer" if kind is int else kind.__name__
            raise CheckpointError(path, name, f"expected {want}, got {value!r}", f"write {name} as {want}")
    if meta["format"] != FORMAT:
        raise CheckpointError(path, "format", f"{meta['format']!r} is not {FORMAT!r}",
                              "this reader knows one format: save the prefix again with this version")
    if meta.get("prefix_positions", "offset") not in PREFIX_POSITIONS:
        raise CheckpointError(path, "prefix_positions", f"{meta['prefix_positions']!r} is not one of "
                              f"{', '.join(PREFIX_POSITIONS)}", "write offset (the default) or none")


def check_fits(path, meta: dict, dims, state: dict[str, torch.Tensor], expected: dict[str, torch.Size]) -> None:
    """The checkpoint's sizes against the model's (``dims``: layers, heads, head_dim) and the tensors
    against the encoder built for it (``expected``: name -> shape)."""
    for name in ("layers", "heads", "head_dim"):
        if name in meta and meta[name] != getattr(dims, name):
            raise CheckpointError(path, name, f"the prefix was saved for {name}={meta[name]}, this model has "
                                  f"{getattr(dims, name)}", "load it on a model of the same sizes")
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise CheckpointError(path, "tensors", f"missing {missing}, unexpected {extra}",
                              "projection_dim / token_dim in the config must match the saved tensors")
    for name, shape in expected.items():
        if tuple(state[name].shape) != tuple(shape):
            raise CheckpointError(path, name, f"shape {tuple(state[name].shape)}, the model needs {tuple(shape)}",
                                  "load it on a model of the sizes it was saved for")


def read_weights(path: Path, fix: str) -> object:
    """The object a weights file holds (``.safetensors`` or a ``torch.save`` file, read without code
    execution); a damaged file is a CheckpointError naming it, with ``fix`` as the remedy."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - both readers raise many types for a damaged file
        raise CheckpointError(path, "(file)", f"not readable ({type(e).__name__}: {e})", fix) from e
