"""Building the models a spec describes: tiny random-weight models, never a download.

``code_source`` says whose code runs: ``transformers`` (a class shipped with transformers),
``reference`` (our own model of a hub-only family's cache contract, in harness/reference) or
``remote`` (the real hub remote code, from a local folder or the local HF cache only; see
harness/core/remote.py).
"""
from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass

import torch

from .expr import first_applicable


def resolve_class(code_source: str, dotted: str):
    """``LlamaConfig`` (a transformers attribute) or ``harness.reference.qwen:QWenConfig``."""
    if ":" in dotted:
        module, _, attr = dotted.partition(":")
        return getattr(importlib.import_module(module), attr)
    import transformers

    try:
        return getattr(transformers, dotted)
    except AttributeError as e:
        raise AttributeError(f"transformers {transformers.__version__} has no {dotted}") from e


@dataclass(frozen=True)
class KVDims:
    """The sizes of one layer's K/V, read off a config through the spec's expressions."""

    layers: int
    heads: int
    head_dim: int  # K's last dim
    v_head_dim: int | None = None  # V's last dim; None: the same as K's (every model but MLA)

    def __post_init__(self):
        if self.v_head_dim is None:
            object.__setattr__(self, "v_head_dim", self.head_dim)

    @property
    def split(self) -> bool:
        """K and V differ in their last dim: the canonical prefix is a (K, V) pair, not one tensor."""
        return self.v_head_dim != self.head_dim


def kv_dims(spec, config) -> KVDims:
    v_exprs = getattr(spec.kv, "v_head_dim", None)
    return KVDims(
        layers=first_applicable(spec.kv.layers, config),
        heads=first_applicable(spec.kv.heads, config),
        head_dim=first_applicable(spec.kv.head_dim, config),
        v_head_dim=first_applicable(v_exprs, config) if v_exprs else None,
    )


def build_model(spec, code_source: str | None = None, device: str = "cpu", dtype: torch.dtype = torch.float32):
    """A tiny model with deterministic random weights, in eval mode."""
    source = code_source or spec.build.code_source
    torch.manual_seed(spec.build.seed)
    if source == "remote":
        from .remote import build_remote_model

        model = build_remote_model(spec)
    else:
        config_cls = resolve_class(source, spec.build.config_class)
        model_cls = resolve_class(source, spec.build.model_class)
        config = config_cls(**spec.build.config)
        # On a GPU, initialise there: a spec at a real size (billions of random weights) would take
        # minutes on the CPU. The CPU path is unchanged, so its weights stay bit-identical.
        with torch.device(device) if device != "cpu" else contextlib.nullcontext():
            model = model_cls(config)
    # Not frozen here: freezing the base is each adapter's job, and the gradients check measures it.
    return model.to(device=device, dtype=dtype).eval()


# Weight files a checkpoint folder may hold (sharded ones through their index).
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def load_checkpoint(path, device: str = "cpu", dtype: torch.dtype = torch.float32, trust_remote_code: bool = False):
    """A real checkpoint from a local folder (never downloaded: local_files_only), in ``dtype``, in
    eval mode. ``trust_remote_code`` only after the caller checked the opt-in and the spec's pin."""
    import transformers
    from packaging.version import Version

    # transformers 4.56 renamed from_pretrained's torch_dtype to dtype (5 warns on the old name).
    dtype_arg = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(path), local_files_only=True, trust_remote_code=trust_remote_code, **{dtype_arg: dtype})
    return model.to(device=device, dtype=dtype).eval()
