"""ChatGLM's own P-Tuning v2 checkpoints (the ``ptuning`` scripts of ChatGLM-6B, ChatGLM2-6B, ChatGLM3-6B).

What those checkpoints hold (from the models' ``PrefixEncoder`` and ``get_prompt``; see
/work/shared/notes/kv-cache-facts.md), stated as facts:

- the weights of ``transformer.prefix_encoder``, in ``pytorch_model.bin`` (or ``model.safetensors``),
  next to a ``config.json`` whose ``pre_seq_len`` is P and ``prefix_projection`` says which shape:
  - without projection: ``embedding.weight`` (P, W), the K/V themselves, W = layers * 2 * heads * D
    (ChatGLM-6B: heads = attention heads, D = hidden / heads; ChatGLM2/3: heads = multi-query groups,
    D = kv_channels);
  - with projection: ``embedding.weight`` (P, E), ``trans.0`` Linear(E -> M), Tanh, ``trans.2``
    Linear(M -> W) (ChatGLM-6B: E = M = hidden; ChatGLM2/3: E = W, M = hidden).
- ``get_prompt`` views each row as (layers * 2, heads, D) and gives layer l slices 2l (keys) and 2l + 1
  (values): the row is (layers, 2, heads, D) in order, ``PrefixEncoder``'s own flat row here, so the
  weights load unchanged (the MLP too, so training can go on).
- the prefix is position-less: with ``pre_seq_len`` the models number the real tokens from 0, so the
  imported prefix is fed that way by default (harness/core/interop/positions.py).
"""
from __future__ import annotations

import json
from pathlib import Path

from ..checkpoint import CheckpointError, read_weights
from .positions import make_positionless

WEIGHT_FILES = ("pytorch_model.bin", "model.safetensors")
KEY_PREFIX = "transformer.prefix_encoder."
# ChatGLM's module names -> PrefixEncoder's
RENAME = {"embedding.weight": "embedding.weight", "trans.0.weight": "mlp.0.weight", "trans.0.bias": "mlp.0.bias",
          "trans.2.weight": "mlp.2.weight", "trans.2.bias": "mlp.2.bias"}


def from_chatglm_ptuning(model, checkpoint, spec=None, prefix_positions: str = "none", **kwargs):
    """A ``PrefixModel`` for ``model`` holding a ChatGLM P-Tuning v2 prefix. ``checkpoint``: the folder
    the ptuning script saved (``pytorch_model.bin`` or ``model.safetensors``, optional ``config.json``),
    one weights file, or a state dict. ``prefix_positions="none"`` (default) feeds it as ChatGLM's own
    ``pre_seq_len`` path does (real tokens from position 0); ``"offset"`` as the harness's default.
    ``kwargs`` go to ``prefix_tune`` (e.g. ``dropout=0.1``, the models' own prefix dropout)."""
    from ..prefix_model import prefix_tune

    built_in = getattr(getattr(model, "config", None), "pre_seq_len", None)
    if built_in is not None:
        # such a model prepends P mask columns to whatever mask it gets: the harness's would count twice
        raise ValueError(f"the model was built with pre_seq_len={built_in}, so it runs its own prefix and widens "
                         "the attention mask itself; build it without pre_seq_len (config.pre_seq_len = None) "
                         "and let the harness feed the imported prefix")
    state, source = _load_state(checkpoint)
    enc_state = _prefix_encoder_weights(state, source)
    emb = enc_state["embedding.weight"]
    projected = "mlp.0.weight" in enc_state
    p = emb.shape[0]
    config_path = Path(checkpoint) / "config.json" if isinstance(checkpoint, (str, Path)) else None
    if config_path is not None and config_path.is_file():
        _check_config(config_path, p, projected)
    if projected:
        pm = prefix_tune(model, p, spec, projection_dim=enc_state["mlp.0.weight"].shape[0],
                         token_dim=emb.shape[1], **kwargs)
    else:
        pm = prefix_tune(model, p, spec, **kwargs)
    expected = {k: v.shape for k, v in pm.encoder.state_dict().items()}
    d = pm.contract.dims
    if set(expected) != set(enc_state) or any(tuple(enc_state[k].shape) != tuple(s) for k, s in expected.items()):
        got = {k: tuple(v.shape) for k, v in enc_state.items()}
        raise CheckpointError(source, KEY_PREFIX + "*", f"shapes {got} do not fit this model (layers {d.layers}, "
                              f"KV heads {d.heads}, head dim {d.head_dim}: K/V width "
                              f"{d.layers * 2 * d.heads * d.head_dim})",
                              "use the checkpoint on the model (sizes) it was trained for")
    ref = pm.encoder.embedding.weight
    pm.encoder.load_state_dict({k: v.to(device=ref.device, dtype=ref.dtype) for k, v in enc_state.items()})
    if prefix_positions == "none":
        make_positionless(pm)
    elif prefix_positions != "offset":
        raise ValueError(f"prefix_positions={prefix_positions!r}: use 'none' (ChatGLM's own) or 'offset'")
    return pm


def _load_state(checkpoint) -> tuple[dict, Path | str]:
    if isinstance(checkpoint, dict):
        return checkpoint, "(state dict)"
    path = Path(checkpoint)
    if path.is_dir():
        found = [path / n for n in WEIGHT_FILES if (path / n).exists()]
        if not found:
            raise CheckpointError(path, "(folder)", f"holds none of {', '.join(WEIGHT_FILES)}",
                                  "pass the checkpoint folder the ptuning script saved (checkpoint-NNN)")
        path = found[0]
    if not path.exists():
        raise CheckpointError(path, "(file)", "missing", "pass the ptuning checkpoint folder or its weights file")
    state = read_weights(path, "the file is damaged or truncated: copy the checkpoint again")
    if not isinstance(state, dict):
        raise CheckpointError(path, "(top level)", f"expected a state dict, got {type(state).__name__}",
                              "pass the pytorch_model.bin the ptuning script saved")
    return state, path


def _prefix_encoder_weights(state: dict, source) -> dict:
    """The prefix encoder's tensors under PrefixEncoder's names. Keys may carry the full
    ``transformer.prefix_encoder.`` prefix (as saved) or none (already stripped, as the scripts'
    loading code does before ``load_state_dict``)."""
    if any(k.startswith(KEY_PREFIX) for k in state):
        state = {k[len(KEY_PREFIX):]: v for k, v in state.items() if k.startswith(KEY_PREFIX)}
    unknown = sorted(set(state) - set(RENAME))
    if "embedding.weight" not in state or unknown:
        raise CheckpointError(source, KEY_PREFIX + "embedding.weight" if "embedding.weight" not in state
                              else KEY_PREFIX + unknown[0],
                              f"not a ChatGLM prefix encoder (keys: {sorted(state)[:8]})",
                              f"pass the weights saved with {KEY_PREFIX}embedding.weight (and trans.0/trans.2 "
                              "with prefix_projection)")
    out = {RENAME[k]: v for k, v in state.items()}
    trans = {k for k in out if k.startswith("mlp.")}
    if trans and len(trans) != 4:
        raise CheckpointError(source, KEY_PREFIX + "trans", f"incomplete projection (has {sorted(trans)})",
                              "a projected prefix encoder saves trans.0 and trans.2 weights and biases")
    return out


def _check_config(path: Path, p: int, projected: bool) -> None:
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(path, "(syntax)", f"not valid JSON ({e})", "restore the file from the checkpoint") from e
    if cfg.get("pre_seq_len") is not None and cfg["pre_seq_len"] != p:
        raise CheckpointError(path, "pre_seq_len", f"{cfg['pre_seq_len']}, the weights hold {p} prefix rows",
                              "the config and weights come from different checkpoints")
    if cfg.get("prefix_projection") is not None and bool(cfg["prefix_projection"]) != projected:
        raise CheckpointError(path, "prefix_projection", f"{cfg['prefix_projection']}, the weights are "
                              f"{'' if projected else 'not '}projected (trans.* {'present' if projected else 'absent'})",
                              "the config and weights come from different checkpoints")
