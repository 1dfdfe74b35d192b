"""Axes of the matrix beyond spec row x adapter x check: the dtype, the attention implementation, and
a generated variant row per spec for the P-Tuning v2 MLP (``projection_dim``).

- dtype: ``--dtype float32,bfloat16`` (default ``auto``: float32 and bfloat16, plus float16 on CUDA).
- attention: ``--attn eager,sdpa`` (default; ``flash_attention_2`` where installed on CUDA). Only models
  whose code is transformers' own (``code_source: transformers``) take an implementation; the others
  (our reference models, hub remote code) pick their own and run once, as ``own``. An implementation a
  model does not support gives a skipped cell with the reason, never an error.
- ``mlp`` variant: the harness adapter with the MLP-reparameterised encoder, for the checks where the
  MLP changes anything (gradients, train, save_load; see checks/projection.py).

Cell ids and table rows keep today's names for the default combination (float32, the model's default
attention): ``llama-harness-equivalence``; the others add what differs: ``llama-harness-equivalence-bf16``,
``llama-harness-equivalence-bf16-eager``; the table row (``model``) likewise ``llama-bf16-eager``.
"""
from __future__ import annotations

import copy
import functools
import importlib.util
from dataclasses import dataclass, replace

import torch

from harness.core import names
from harness.core.models import resolve_class
from harness.core.spec import Variant

DEFAULT_DTYPE = "float32"
DEFAULT_ATTN = "eager,sdpa"
OWN = "own"  # the model's code picks its attention (reference models, hub remote code)
MLP_VARIANT = "mlp"
MLP_CHECKS = ("gradients", "train", "save_load")
MLP_WIDTH = 32  # the MLP's hidden width; at least P, so the last layer can map P hidden vectors anywhere


@dataclass(frozen=True)
class ProjectedVariant(Variant):
    """A variant whose prefix goes through the P-Tuning v2 MLP (hidden width ``projection_dim``)."""

    projection_dim: int = MLP_WIDTH


def mlp_variant() -> ProjectedVariant:
    return ProjectedVariant(MLP_VARIANT, "the P-Tuning v2 MLP (prefix_projection) in front of the K/V",
                            adapters=("harness",))


def parse_dtypes(value: str | None, device: str, real_checkpoints: bool = False) -> list[str]:
    """``auto``: float32 and bfloat16, and float16 where the device computes in it (CUDA). With real
    checkpoints (--checkpoint/--checkpoints) ``auto`` is the one dtype they load in: bfloat16 on a GPU (as
    they are trained and served), float32 on the CPU; loading a 7B model three times is not a default."""
    if not value or value == "auto":
        if real_checkpoints:
            return ["bfloat16" if device == "cuda" else DEFAULT_DTYPE]
        return [DEFAULT_DTYPE, "bfloat16"] + (["float16"] if device == "cuda" else [])
    wanted = [x.strip() for x in value.split(",") if x.strip()]
    bad = [w for w in wanted if w not in names.DTYPES]
    if bad:
        raise ValueError(f"--dtype: invalid choice {', '.join(map(repr, bad))}; known: auto, {', '.join(names.DTYPES)}")
    return list(dict.fromkeys(wanted))


def parse_attn(value: str | None) -> list[str]:
    wanted = [x.strip() for x in (value or DEFAULT_ATTN).split(",") if x.strip()]
    bad = [w for w in wanted if w not in names.ATTN_IMPLEMENTATIONS]
    if bad:
        raise ValueError(f"--attn: invalid choice {', '.join(map(repr, bad))}; known: {', '.join(names.ATTN_IMPLEMENTATIONS)}")
    return list(dict.fromkeys(wanted))


def _model_class(spec):
    return _class_of(spec.build.code_source, spec.build.model_class)


@functools.lru_cache(maxsize=None)
def _class_of(code_source: str, dotted: str):
    try:
        return resolve_class(code_source, dotted)
    except (AttributeError, ImportError):
        return None  # not in this transformers: building the model says so, in the cell's error row


def default_attn(spec) -> str:
    """The implementation transformers picks for this model unasked: sdpa where the class supports it."""
    if spec.build.code_source != "transformers":
        return OWN
    cls = _model_class(spec)
    return "sdpa" if cls is not None and getattr(cls, "_supports_sdpa", False) else "eager"


def attn_values(spec, code_source: str, wanted: list[str]) -> list[str]:
    """The implementations a spec row runs under: the requested ones for transformers' own models,
    ``own`` (once) for code that picks its own. The model's default comes first."""
    if code_source != "transformers":
        return [OWN]
    first = default_attn(spec)
    return sorted(wanted, key=lambda a: a != first)


def unsupported_reason(cell, device: str) -> str | None:
    """Why this cell's attention implementation cannot run here (the cell is skipped), or None."""
    attn = getattr(cell, "attn", OWN)
    if attn in (OWN, "eager"):
        return None
    cls = _model_class(cell.spec)
    if cls is None:
        return None
    if attn == "sdpa" and not getattr(cls, "_supports_sdpa", False):
        return f"{cls.__name__} does not support attn_implementation='sdpa' in this transformers"
    if attn == "flash_attention_2":
        if not (getattr(cls, "_supports_flash_attn", False) or getattr(cls, "_supports_flash_attn_2", False)):
            return f"{cls.__name__} does not support attn_implementation='flash_attention_2'"
        if device != "cuda" or importlib.util.find_spec("flash_attn") is None:
            return "flash_attention_2 needs the flash_attn package and a CUDA device"
    return None


def suffix(spec, dtype: str, attn: str) -> str:
    """What a cell adds to its id and row for a non-default combination: '', '-bf16', '-bf16-eager'."""
    parts = [] if dtype == DEFAULT_DTYPE else [names.DTYPE_SHORT[dtype]]
    if attn not in (OWN, default_attn(spec)):
        parts.append(attn)
    return "".join(f"-{p}" for p in parts)


def expand(cells, dtypes: list[str], attns: list[str], mlp: bool = True) -> list:
    """Every cell of ``build_cells`` under each dtype and attention implementation it runs under,
    plus (``mlp``) the ``mlp`` variant's cells (one per spec and code source)."""
    out, seen = [], set()
    for cell in cells:
        base = [cell]
        key = (cell.spec.name, cell.code_source, cell.check)
        if mlp and cell.check in MLP_CHECKS and cell.adapter == "harness" and key not in seen:
            seen.add(key)
            base.append(replace(cell, variant=mlp_variant()))
        for c in base:
            for dtype in dtypes:
                for attn in attn_values(c.spec, c.code_source, attns):
                    out.append(replace(c, dtype=dtype, attn=attn))
    return out


def attach_projected(model, spec, variant, num_virtual_tokens: int, width: int):
    """The harness adapter with the P-Tuning v2 MLP of hidden width ``width`` in front of the K/V."""
    from harness.core.prefix_model import PrefixModel

    from .adapters.ours import PrefixModelAttached

    return PrefixModelAttached(PrefixModel(model, spec, num_virtual_tokens, projection_dim=width,
                                           fixes=variant.apply_fixes))


def set_attention(model, attn: str):
    """The model computing attention with ``attn`` (a copy when it must be rebuilt): transformers 5 switches
    in place; older releases pick the attention classes at construction, so the model is rebuilt with
    the same weights."""
    if attn == OWN:
        return model
    if getattr(model.config, "_attn_implementation", None) == attn:
        return model
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(attn)  # some classes (Falcon) only warn that they cannot switch
    if getattr(model.config, "_attn_implementation", None) != attn:
        config = copy.deepcopy(model.config)
        config._attn_implementation = attn
        rebuilt = type(model)(config).to(device=next(model.parameters()).device, dtype=next(model.parameters()).dtype)
        rebuilt.load_state_dict(model.state_dict())
        model = rebuilt.eval()
    got = getattr(model.config, "_attn_implementation", None)
    if got != attn:
        raise RuntimeError(f"asked for attn_implementation={attn!r}, the model runs {got!r}")
    return model


def row_fields(cell) -> dict:
    return {"dtype": cell.dtype, "attn_implementation": cell.attn}


def torch_dtype(name: str) -> torch.dtype:
    return getattr(torch, name)
