"""The matrix: every spec row (a spec and its variants) x adapter x check, as cells.

A cell is one test with a readable id (``llama-harness-equivalence``, ``qwen-unfixed-harness-train``,
``qwen-harness-equivalence-remote``). Expected failures are looked up in the spec, never decided here.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass

from harness.core import names
from harness.core.spec import DEFAULT_VARIANT, ModelSpec, Variant

TRUST_ENV = "PREFIX_COMPAT_TRUST_REMOTE_CODE"
# The one cell of a spec declaring ``not_applicable`` (no attention KV cache): no adapter, one n/a row.
NOT_APPLICABLE_CHECK = "applicable"


class SelectionError(ValueError):
    """A command-line selection that names nothing real (the plugin turns it into a usage error)."""


@dataclass(frozen=True)
class Cell:
    spec: ModelSpec
    variant: Variant
    adapter: str
    check: str
    code_source: str
    checkpoint: object = None  # a real checkpoint (matrix/checkpoints.py Checkpoint) instead of the tiny model
    dtype: str = "float32"  # the dtype and attention axes (axes.py): a non-default value adds to id and row
    attn: str = "own"

    @property
    def _axes(self) -> str:
        from .axes import suffix

        return suffix(self.spec, self.dtype, self.attn)

    @property
    def _name(self) -> str:
        name = self.spec.name if self.variant.name == DEFAULT_VARIANT else f"{self.spec.name}-{self.variant.name}"
        return f"{name}@{self.checkpoint.label}" if self.checkpoint is not None else name

    @property
    def row(self) -> str:
        """The model row of the compatibility table (``llama@Llama-2-7b-hf`` on a real checkpoint)."""
        return self._name + self._axes

    @property
    def id(self) -> str:
        suffix = "" if self.code_source == self.spec.build.code_source else f"-{self.code_source}"
        adapter = "" if self.adapter == "-" else f"{self.adapter}-"  # a not_applicable row has no adapter
        return f"{self._name}-{adapter}{self.check}{suffix}{self._axes}"

    def expected_failure(self, versions: dict[str, str]):
        return self.spec.expected_failure(self.adapter, self.check, self.variant.name, self.code_source, versions,
                                          self.dtype)


def split(value: str | None) -> list[str] | None:
    return [x.strip() for x in value.split(",") if x.strip()] if value else None


def unknown_names(wanted: list[str], known, flag: str) -> str | None:
    """A usage message for names not in ``known`` ("did you mean ..."), or None."""
    known = sorted(set(known))
    bad = [w for w in wanted if w not in known]
    if not bad:
        return None
    hints = []
    for w in bad:
        near = difflib.get_close_matches(w, known, n=1)
        hints.append(f"{w!r}" + (f" (did you mean {near[0]!r}?)" if near else ""))
    return f"{flag}: unknown {', '.join(hints)}; known: {', '.join(known)}"


def select_specs(specs: list[ModelSpec], models: str | None, also_known=()) -> list[ModelSpec]:
    """The specs named by ``--models`` (all when None). ``also_known``: names of spec files that did
    not load; asking for one is not a usage error (its error row says what is wrong)."""
    wanted = split(models)
    if not wanted:
        return specs
    problem = unknown_names(wanted, [s.name for s in specs] + list(also_known), "--models")
    if problem:
        raise SelectionError(problem)
    return [s for s in specs if s.name in wanted]


def code_sources_for(spec: ModelSpec, which: str) -> list[str]:
    """``default``: the spec's build source; ``remote``: real hub code only; ``all``: both."""
    has_remote = spec.remote is not None
    if which == "default":
        return [spec.build.code_source]
    if which == "remote":
        return ["remote"] if has_remote else []
    return [spec.build.code_source] + (["remote"] if has_remote else [])


def build_cells(specs, adapters=None, checks=None, code_source: str = "default") -> list[Cell]:
    adapters = split(adapters) or list(names.ADAPTERS)
    checks = split(checks) or list(names.CHECKS)
    for value, allowed, flag in ((adapters, names.ADAPTERS, "--adapters"), (checks, names.CHECKS, "--checks")):
        problem = unknown_names(value, allowed, flag)
        if problem:
            raise SelectionError(problem)
    cells = []
    for spec in specs:
        if spec.not_applicable:  # no adapter x check cells: see not_applicable_cells
            continue
        for source in code_sources_for(spec, code_source):
            for variant in spec.variants:
                for adapter in adapters:
                    if adapter not in variant.adapters:
                        continue
                    for check in checks:
                        cells.append(Cell(spec, variant, adapter, check, source))
    return cells


def not_applicable_cells(specs) -> list[Cell]:
    """One cell per spec declaring ``not_applicable``, whatever the adapters and checks selected: its
    row says ``n/a`` and why, once the tiny model shows it keeps no attention KV cache."""
    return [Cell(s, s.variants[0], "-", NOT_APPLICABLE_CHECK, s.build.code_source) for s in specs if s.not_applicable]


def remote_skip_reason(cell: Cell) -> str | None:
    """Why a remote-code cell is skipped here, or None. Code the user named (a code-dir variable or
    option) is never skipped: if it cannot be used, building the model fails and the cell is an
    ``error`` saying why."""
    if cell.code_source != "remote":
        return None
    from harness.core.remote import code_dir_variable, locate_code

    if os.environ.get(TRUST_ENV) != "1":
        return (f"remote code is opt-in: pass --trust-remote-code or set {TRUST_ENV}=1 (runs the hub code of {cell.spec.remote.repo} "
                f"@ {cell.spec.remote.revision[:12]} from a local folder or the local HF cache)")
    if os.environ.get(code_dir_variable(cell.spec.name)):
        return None
    _, why = locate_code(cell.spec)
    return why
