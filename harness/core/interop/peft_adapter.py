"""PEFT prefix-tuning adapters, both ways.

What PEFT writes (learned from peft 0.10-0.21: ``PrefixEncoder``, ``PeftModel.get_prompt`` and the
prompt-learning save path), stated as facts:

- ``adapter_config.json``: ``peft_type: PREFIX_TUNING``, ``num_virtual_tokens`` P, ``num_layers`` L,
  ``num_attention_heads`` H (the KV heads for a grouped-KV model), ``token_dim`` = H * D,
  ``prefix_projection``, ``encoder_hidden_size``, ``num_transformer_submodules`` (1 for a decoder).
- ``adapter_model.safetensors`` (or ``adapter_model.bin``): one tensor ``prompt_embeddings`` of shape
  (P, L * 2 * token_dim), the prefix's K/V themselves. With ``prefix_projection`` PEFT saves the MLP's
  output, not the MLP: the projection is collapsed on save, and a loaded adapter is a plain table.
- ``get_prompt`` reads each row as (L * 2, H, D) and hands layer l the slices 2l (keys) and 2l + 1
  (values): a row is (L, 2, H, D) in order, which is exactly ``PrefixEncoder``'s flat row here, so the
  table converts without any permutation and the harness then feeds it in the target model's layout.
"""
from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import torch

from ..checkpoint import CheckpointError, read_json, read_weights

CONFIG_FILE = "adapter_config.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
TENSOR = "prompt_embeddings"


def from_peft(model, peft_dir, spec=None, **kwargs):
    """A ``PrefixModel`` for ``model`` holding the prefix of a PEFT prefix-tuning adapter folder. The
    model may cache K/V in any layout (Qwen v1, ChatGLM): only the sizes (layers, KV heads, head dim)
    must match the adapter's. A projected adapter arrives as its K/V table (PEFT saves no MLP), so
    the result has no projection. ``kwargs`` go to ``prefix_tune`` (e.g. ``fixes``)."""
    from ..prefix_model import prefix_tune

    if kwargs.get("projection_dim"):
        raise ValueError("from_peft: a PEFT adapter holds its prefix as a K/V table (PEFT saves no MLP), so it "
                         "cannot be loaded into a projected encoder; leave projection_dim out")
    peft_dir = Path(peft_dir)
    cfg_path = peft_dir / CONFIG_FILE
    cfg = _read_config(cfg_path)
    table, weights = _read_table(peft_dir)
    p = cfg["num_virtual_tokens"]
    width = cfg["num_layers"] * 2 * cfg["token_dim"]
    if tuple(table.shape) != (p, width):
        raise CheckpointError(weights, TENSOR, f"shape {tuple(table.shape)}, {CONFIG_FILE} implies {(p, width)} "
                              "(num_virtual_tokens, num_layers * 2 * token_dim)", "the two files come from different adapters")
    pm = prefix_tune(model, p, spec, **kwargs)
    d = pm.contract.dims
    have = {"num_layers": d.layers, "num_attention_heads": d.heads, "token_dim": d.heads * d.head_dim}
    for field_, value in have.items():
        if cfg[field_] != value:
            raise CheckpointError(cfg_path, field_, f"the adapter has {field_}={cfg[field_]}, spec {pm.spec.name!r} "
                                  f"gives this model {value} (layers {d.layers}, KV heads {d.heads}, head dim "
                                  f"{d.head_dim})", "use the adapter on a model of the sizes it was trained for")
    with torch.no_grad():
        pm.encoder.embedding.weight.copy_(table.to(pm.encoder.embedding.weight))  # (P, L * 2 * H * D)
    return pm


def to_peft(pm, directory, base_model_name_or_path: str | None = None) -> Path:
    """Write ``pm``'s prefix as a PEFT prefix-tuning adapter; returns the folder. A projected encoder
    is written as its output table, as PEFT itself saves one; ``prefix_projection`` is written false
    because the file holds no MLP, so PEFT can also resume training on the table."""
    from safetensors.torch import save_file

    enc = pm.encoder
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    was_training = enc.training
    enc.eval()  # no dropout in what is saved
    with torch.no_grad():
        kv = enc(1)[:, :, 0]  # (L, 2, H, P, D)
    enc.train(was_training)
    table = kv.permute(3, 0, 1, 2, 4).reshape(enc.num_virtual_tokens, enc.width)  # (P, L * 2 * H * D)
    name = base_model_name_or_path or getattr(pm.base.config, "_name_or_path", None) or None
    config = {
        "peft_type": "PREFIX_TUNING", "task_type": "CAUSAL_LM", "inference_mode": True,
        "num_virtual_tokens": enc.num_virtual_tokens, "num_layers": enc.layers,
        "num_attention_heads": enc.heads, "token_dim": enc.heads * enc.head_dim,
        "encoder_hidden_size": enc.heads * enc.head_dim, "prefix_projection": False,
        "num_transformer_submodules": 1, "base_model_name_or_path": name, "revision": None,
        "peft_version": _version("peft"),
    }
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    save_file({TENSOR: table.detach().to("cpu").contiguous()}, str(directory / WEIGHT_FILES[0]),
              metadata={"format": "pt"})
    return directory


def _read_config(path: Path) -> dict:
    cfg = read_json(path, "pass the folder PeftModel.save_pretrained wrote", "the adapter")
    if cfg.get("peft_type") != "PREFIX_TUNING":
        raise CheckpointError(path, "peft_type", f"{cfg.get('peft_type')!r} is not PREFIX_TUNING",
                              "only prefix-tuning adapters carry a K/V prefix")
    if cfg.get("num_transformer_submodules") not in (None, 1):
        raise CheckpointError(path, "num_transformer_submodules", f"{cfg['num_transformer_submodules']} "
                              "(an encoder-decoder prefix)", "use a decoder-only (CAUSAL_LM) adapter")
    for field_ in ("num_virtual_tokens", "num_layers", "num_attention_heads", "token_dim"):
        value = cfg.get(field_)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise CheckpointError(path, field_, f"expected a positive integer, got {value!r}",
                                  "PEFT fills it when the adapter is created: restore the file")
    if cfg["token_dim"] % cfg["num_attention_heads"]:
        raise CheckpointError(path, "token_dim", f"{cfg['token_dim']} is not a multiple of num_attention_heads "
                              f"{cfg['num_attention_heads']}", "restore the file from the adapter")
    return cfg


def _read_table(peft_dir: Path):
    """(prompt_embeddings, the file it came from)."""
    for name in WEIGHT_FILES:
        path = peft_dir / name
        if not path.exists():
            continue
        state = read_weights(path, "the file is damaged or truncated: copy the adapter again")
        if not isinstance(state, dict) or TENSOR not in state:
            found = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise CheckpointError(path, TENSOR, f"missing (found {found})",
                                  "pass a prefix-tuning adapter saved by PeftModel.save_pretrained")
        return state[TENSOR].float(), path
    raise CheckpointError(peft_dir / WEIGHT_FILES[0], "(file)", f"missing (nor {WEIGHT_FILES[1]})",
                          "pass the folder PeftModel.save_pretrained wrote")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None
