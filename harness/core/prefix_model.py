"""The public API: attach a trainable P-Tuning v2 prefix to any model a spec describes.

    import harness
    pm = harness.prefix_tune(model, num_virtual_tokens=16)   # finds the spec from model.config
    loss = pm(input_ids, attention_mask=mask, labels=labels).loss
    tokens = pm.generate(input_ids, max_new_tokens=20)
    pm.save_prefix("out/"); pm2 = harness.load_prefix(model, "out/")

The base model is frozen; only ``pm.encoder`` trains, with or without gradient checkpointing.
Generation hands the prefix to the model's own ``generate()`` where that is measured to read it
right, and runs the harness's own decoding loop elsewhere: some models' ``generate()`` mistakes a
prefix for a finished prompt (Qwen v1 and ChatGLM-6B truncate the prompt to its last token).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from . import checkpoint, hf_generate
from .checkpointing import cache_kept
from .containers import returned_cache
from .contract import CacheContract
from .encoder import PrefixEncoder
from .fixes import apply_fixes
from .layout import Layout
from .spec import SPEC_DIR, ModelSpec, find_spec_for, load_spec

PREFIX_FILE = "prefix.pt"


class PrefixModel(nn.Module):
    def __init__(self, model: nn.Module, spec: ModelSpec | None = None, num_virtual_tokens: int = 16,
                 projection_dim: int | None = None, dropout: float = 0.0, layout: Layout | None = None,
                 fixes: bool = True, token_dim: int | None = None):
        super().__init__()
        self.spec = spec or find_spec_for(model.config)
        self.base = model
        for p in model.parameters():
            p.requires_grad_(False)
        self.contract = CacheContract.for_model(model, self.spec, layout)
        d = self.contract.dims
        ref = next(model.parameters())
        self.encoder = PrefixEncoder(d.layers, d.heads, d.head_dim, num_virtual_tokens, projection_dim,
                                     token_dim=token_dim, dropout=dropout, v_head_dim=d.v_head_dim).to(device=ref.device, dtype=ref.dtype)
        # "offset": the prefix takes positions 0..P-1, as real tokens would; "none": a position-less
        # prefix, as ChatGLM's own P-Tuning v2 trains one (harness/core/interop/positions.py)
        self.prefix_positions = "offset"
        self._hooks = apply_fixes(model, self.spec, self.contract) if fixes else []
        self.fixes_applied = bool(self._hooks)

    @property
    def num_virtual_tokens(self) -> int:
        return self.encoder.num_virtual_tokens

    def detach(self) -> nn.Module:
        """Remove the fix hooks and hand back the base model."""
        for h in self._hooks:
            h.remove()
        self._hooks = []
        return self.base

    def gradient_checkpointing_enable(self, **kwargs):
        """Checkpoint the base model's layers (what ``TrainingArguments(gradient_checkpointing=True)``
        calls); the prefix is kept (see forward)."""
        self.base.gradient_checkpointing_enable(**kwargs)

    def prefix_cache(self, batch_size: int):
        """The prefix in the model's own layout and container, a fresh object per call (transformers'
        cache objects grow in place as the model runs)."""
        return self.contract.to_model_cache(self.encoder(batch_size))

    def forward(self, input_ids, attention_mask=None, labels=None, **kwargs):
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        cache = self.prefix_cache(input_ids.shape[0])
        kw = self.contract.model_kwargs(input_ids, input_ids, mask, self.num_virtual_tokens, cache)
        if labels is not None:
            kw["labels"] = labels
        # The prefix path keeps the cache on whatever a training recipe sets (use_cache=False beside
        # gradient checkpointing): transformers 4.3x reads a Cache object only with use_cache on.
        kwargs.pop("use_cache", None)
        with cache_kept(self.base, cache):  # checkpointed layers keep the prefix (harness/core/checkpointing.py)
            return self.base(**kw, **kwargs)

    @torch.no_grad()
    def generate(self, input_ids, attention_mask=None, max_new_tokens: int | None = None, eos_token_id=None,
                 output_logits: bool = False, use_model_generate: bool | None = None, **kwargs):
        """Generation behind the prefix. Returns the prompt followed by the new tokens, (B, L + n); with
        ``output_logits`` also each step's raw logits, (B, n, V). Exactly ``max_new_tokens`` unless
        ``eos_token_id`` is given (default 20; ``max_length``, as in Hugging Face, counts the prompt: it
        gives max_length - L new tokens). Batches may be left-padded (``attention_mask`` 0 on the left).

        Other keywords go to the model's own ``generate()`` (``num_beams``, ``do_sample``,
        ``streamer``, ``stopping_criteria``, ...), which gets the prefix wherever one of its steps is
        measured to equal this model's forward (harness/core/hf_generate.py); elsewhere (Qwen v1 and
        ChatGLM-6B keep only the last prompt token behind a past) the harness's own loop runs, which
        does greedy decoding and sampling (``do_sample``, ``temperature``, ``top_k``). Force one with
        ``use_model_generate`` True / False; ``last_generate_path`` says which ran and why."""
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        # max_length counts the caller's prompt; the model's generate() would count the P placeholders too
        max_length = kwargs.pop("max_length", None)
        if max_new_tokens is None:
            max_new_tokens = max(0, max_length - input_ids.shape[1]) if max_length is not None else 20
        path, why = hf_generate.LOOP, "use_model_generate=False"
        if use_model_generate is not False and output_logits and not hf_generate.returns_raw_logits():
            if use_model_generate:
                raise ValueError("use_model_generate=True with output_logits: this transformers' generate() cannot "
                                 "return raw step logits (output_logits came in 4.38)")
            why = "output_logits asked, which this transformers' generate() cannot return (it came in 4.38)"
        elif use_model_generate is not False:
            agrees, why = hf_generate.model_generate_agrees(self, input_ids, mask)
            if agrees:
                path = hf_generate.MODEL
            elif use_model_generate:
                raise ValueError(f"use_model_generate=True: {why}")
        self.last_generate_path = (path, why)
        if path == hf_generate.MODEL:
            extra = {"return_dict_in_generate": True, "output_logits": True} if output_logits else {}
            out = hf_generate.model_generate(self, input_ids, mask, max_new_tokens=max_new_tokens,
                                             eos_token_id=eos_token_id, **kwargs, **extra)
            return (out.sequences, torch.stack(out.logits, dim=1)) if output_logits else out
        return self._loop(input_ids, mask, max_new_tokens, eos_token_id, output_logits, why, **kwargs)

    def _loop(self, input_ids, mask, max_new_tokens, eos_token_id, output_logits, why, do_sample=False,
              temperature: float = 1.0, top_k: int | None = None, **unsupported):
        """The harness's own decoding loop over the model's forward: positions follow the spec's
        convention, which counts real tokens only where the model takes positions."""
        unsupported = sorted(k for k, v in unsupported.items() if v is not None and not (k == "num_beams" and v == 1))
        if unsupported:
            raise ValueError(f"{', '.join(unsupported)}: not available on the harness's own generation loop, "
                             f"which runs here because {why}")
        ids = input_ids
        cache, new = self.prefix_cache(ids.shape[0]), ids
        done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
        steps = []
        for _ in range(max_new_tokens):
            out = self.base(**self.contract.model_kwargs(new, ids, mask, self.num_virtual_tokens, cache))
            last = out.logits[:, -1, :]  # (B, V)
            steps.append(last)
            nxt = _sample(last, temperature, top_k) if do_sample else last.argmax(-1)  # (B,)
            if eos_token_id is not None:
                nxt = torch.where(done, torch.full_like(nxt, eos_token_id), nxt)
                done |= nxt == eos_token_id
            cache, new = returned_cache(out), nxt[:, None]
            ids = torch.cat((ids, new), dim=1)
            mask = torch.cat((mask, torch.ones_like(new)), dim=1)
            if eos_token_id is not None and bool(done.all()):
                break
        return (ids, torch.stack(steps, dim=1)) if output_logits else ids

    # ------------------------------------------------------------------ persistence
    def save_prefix(self, directory) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = checkpoint_meta(self)
        torch.save({"meta": meta, "state": self.encoder.state_dict()}, directory / PREFIX_FILE)
        (directory / "prefix.json").write_text(json.dumps(meta, indent=2) + "\n")
        return directory / PREFIX_FILE

    def save_pretrained(self, directory) -> Path:
        """``prefix_model.safetensors`` + ``prefix_config.json`` (harness/core/checkpoint.py)."""
        return checkpoint.write(directory, checkpoint_meta(self), self.encoder.state_dict())

    def to_peft(self, directory) -> Path:
        """A PEFT prefix-tuning adapter (``PeftModel.from_pretrained`` loads it where PEFT runs the model)."""
        from .interop.peft_adapter import to_peft

        return to_peft(self, directory)


def _sample(logits, temperature: float, top_k: int | None) -> torch.Tensor:
    """One token per row (B,) drawn from softmax(logits / temperature), over the top_k only when given."""
    logits = logits.float() / max(temperature, 1e-6)  # (B, V)
    if top_k:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1)[:, 0]


def prefix_tune(model: nn.Module, num_virtual_tokens: int = 16, spec: ModelSpec | str | None = None,
                **kwargs) -> PrefixModel:
    """Attach a trainable prefix. ``spec`` may be a ModelSpec, a spec name or file; by default the
    spec is found from ``model.config`` (``match`` in model_specs/)."""
    if isinstance(spec, str):
        spec = load_spec(spec if spec.endswith((".yaml", ".yml")) else SPEC_DIR / f"{spec}.yaml")
    return PrefixModel(model, spec, num_virtual_tokens, **kwargs)


def checkpoint_meta(pm: PrefixModel) -> dict:
    """What a checkpoint needs to rebuild ``pm`` on a model (checkpoint.FIELDS)."""
    return {"spec": pm.spec.name, "layout": str(pm.contract.layout), "fixes": pm.fixes_applied,
            "prefix_positions": pm.prefix_positions, **pm.encoder.config()}


def load_prefix(model: nn.Module, directory, spec: ModelSpec | str | None = None) -> PrefixModel:
    """Rebuild a saved prefix on a model (the model must have the saved one's sizes). Reads what
    ``save_pretrained`` writes and the older ``prefix.pt``; a damaged or mismatched checkpoint is a
    ``CheckpointError`` naming the file and field."""
    meta, state = checkpoint.read(directory)
    source = Path(directory) / (checkpoint.CONFIG_FILE if "tensors" in meta else PREFIX_FILE)
    try:
        layout = Layout.parse(meta["layout"])
    except ValueError as e:
        raise checkpoint.CheckpointError(source, "layout", str(e), "write the layout as saved, e.g. [b, h, s, d]") from e
    if spec is None and not (SPEC_DIR / f"{meta['spec']}.yaml").exists():
        raise checkpoint.CheckpointError(source, "spec", f"no spec named {meta['spec']!r} in {SPEC_DIR}",
                                         "pass spec= the spec (file) the prefix was saved with")
    pm = prefix_tune(model, meta["num_virtual_tokens"], spec or meta["spec"], projection_dim=meta.get("projection_dim"),
                     layout=layout, fixes=meta["fixes"], token_dim=meta.get("token_dim"))
    checkpoint.check_fits(source, meta, pm.contract.dims, state,
                          {k: v.shape for k, v in pm.encoder.state_dict().items()})
    pm.encoder.load_state_dict(state)
    if meta.get("prefix_positions", "offset") == "none":
        from .interop.positions import make_positionless

        make_positionless(pm)
    return pm
