"""Every verdict can fail, and verdicts do not depend on luck.

- Deliberately broken adapters (one drops the prefix, one swaps K and V, one reverses the positions
  of the keys but not of the values) fail every check on every seed-family spec: a check they pass
  could not tell a wrong adapter from a right one.
- An adapter that reverses the prefix positions of K and V together is caught by ``accepts`` (the
  model's cache holds the prefix in the wrong order) and by nothing else, and rightly so: the new
  tokens see every prefix position, attention is a sum over (key, value) pairs and the keys carry
  their rotary positions, so the logits are the same (measured here, so the day a model makes the
  order matter, e.g. with a sliding window over the prefix, this test says so).
- Over ten seeds, the rows that are right pass every check and the rows that are known to be wrong
  (Qwen v1 without its fix, the textbook layout where its shape happens to fit, the dropping
  adapter) fail on every seed.
- Copies of a spec under other file names get the same verdicts.
"""
from __future__ import annotations

import functools
import shutil

import pytest
import torch

from harness.core import names
from harness.core.models import build_model
from harness.core.prefix_model import PrefixModel, load_prefix
from harness.core.spec import SPEC_DIR, load_spec
from harness.matrix.adapters import attach as real_attach
from harness.matrix.adapters.ours import PrefixModelAttached
from harness.matrix.bench import Bench, Settings
from harness.matrix.cells import Cell
from harness.matrix.checks import run as run_check
from harness.reporting.results import library_versions

SEED_FAMILIES = ("llama", "qwen1.5", "qwen", "chatglm", "chatglm2", "chatglm3")
SEEDS = range(10)


# ----------------------------------------------------------------------------- broken adapters
class _Dropping(PrefixModel):
    """Holds a prefix and never hands it to the model."""

    @property
    def num_virtual_tokens(self) -> int:
        return 0

    def prefix_cache(self, batch_size):
        return None


class _Swapping(PrefixModel):
    """Hands the model V where K belongs and K where V belongs."""

    def prefix_cache(self, batch_size):
        return self.contract.to_model_cache(self.encoder(batch_size).flip(1))  # (layers, 2, B, H, P, D)


class _Reversing(PrefixModel):
    """Hands the model the prefix positions in reverse order (K and V alike)."""

    def prefix_cache(self, batch_size):
        return self.contract.to_model_cache(self.encoder(batch_size).flip(-2))  # (layers, 2, B, H, P, D)


class _ReversingKeys(PrefixModel):
    """Reverses the positions of the keys only: key i is paired with value P-1-i."""

    def prefix_cache(self, batch_size):
        kv = self.encoder(batch_size)  # (layers, 2, B, H, P, D)
        return self.contract.to_model_cache(torch.stack((kv[:, 0].flip(-2), kv[:, 1]), dim=1))


BROKEN = {"drops": _Dropping, "swaps_kv": _Swapping, "reverses_keys": _ReversingKeys}
ORDER_ONLY = {"reverses": _Reversing}


class _BrokenAttached(PrefixModelAttached):
    def reload(self, fresh_base, directory):
        pm = load_prefix(fresh_base, directory, spec=self.pm.spec)
        pm.__class__ = self.pm.__class__
        return type(self)(pm)


def _broken_attacher(kind):
    def attacher(adapter, model, spec, variant, p):
        pm = PrefixModel(model, spec, p, fixes=variant.apply_fixes)
        pm.__class__ = {**BROKEN, **ORDER_ONLY}[kind]
        return _BrokenAttached(pm)
    return attacher


# ----------------------------------------------------------------------------- helpers
@functools.lru_cache(maxsize=None)
def _model(path: str):
    return build_model(load_spec(path))


def _measure(spec, check, variant="default", adapter="harness", seed=0, steps=60, attacher=None):
    cell = Cell(spec, spec.variant(variant), adapter, check, spec.build.code_source)
    bench = Bench(cell, _model(spec.path), Settings(steps=steps, seed=seed), attacher=attacher)
    torch.manual_seed(seed)
    return run_check(check, bench)


def _spec(name):
    return load_spec(SPEC_DIR / f"{name}.yaml")


def _undeclared_checks(spec) -> list[str]:
    """The checks the harness adapter's default row is expected to pass (the spec declares the rest,
    e.g. Qwen v1's own code dropping the cache under gradient checkpointing)."""
    versions = library_versions()
    return [c for c in names.CHECKS
            if spec.expected_failure("harness", c, "default", spec.build.code_source, versions) is None]


# ----------------------------------------------------------------------------- tests
@pytest.mark.parametrize("name", SEED_FAMILIES)
@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_a_broken_adapter_fails_every_check(name, kind):
    spec = _spec(name)
    verdicts = {}
    for check in names.CHECKS:
        try:
            m = _measure(spec, check, steps=5, attacher=_broken_attacher(kind))
            verdicts[check] = "inconclusive" if m.inconclusive else ("pass" if m.passed else "fail")
        except Exception as e:  # noqa: BLE001 - a broken adapter may also make the model raise
            verdicts[check] = f"raised {type(e).__name__}"
    assert not [c for c, v in verdicts.items() if v in ("pass", "inconclusive")], verdicts


@pytest.mark.parametrize("name", SEED_FAMILIES)
def test_reversing_k_and_v_together_is_seen_only_in_the_cache(name):
    spec = _spec(name)
    verdicts = {c: _measure(spec, c, steps=20, attacher=_broken_attacher("reverses")) for c in _undeclared_checks(spec)}
    assert not verdicts["accepts"].passed and not verdicts["accepts"].inconclusive, verdicts["accepts"].message
    assert all(m.passed for c, m in verdicts.items() if c != "accepts"), {c: m.message for c, m in verdicts.items()}


@pytest.mark.parametrize("name", SEED_FAMILIES)
def test_right_rows_pass_on_every_seed(name):
    spec = _spec(name)
    bad = []
    for seed in SEEDS:
        for check in _undeclared_checks(spec):
            m = _measure(spec, check, seed=seed)
            if not m.passed:
                bad.append(f"seed {seed} {check}: {m.message[:200]}")
    assert not bad, bad


KNOWN_BAD = [
    ("qwen", "unfixed", "harness", ("equivalence", "train", "generate", "save_load")),
    ("qwen", "p_eq_heads", "naive", names.CHECKS),
]


@pytest.mark.parametrize("name,variant,adapter,checks", KNOWN_BAD, ids=lambda x: x if isinstance(x, str) else None)
def test_known_bad_rows_fail_on_every_seed(name, variant, adapter, checks):
    spec = _spec(name)
    passed = []
    for seed in SEEDS:
        for check in checks:
            m = _measure(spec, check, variant, adapter, seed=seed, steps=20)
            if m.passed or m.inconclusive:
                passed.append(f"seed {seed} {check}: {m.message[:200]}")
    assert not passed, passed


@pytest.mark.parametrize("name", SEED_FAMILIES)
def test_the_dropping_adapter_fails_on_every_seed(name):
    spec = _spec(name)
    passed = []
    for seed in SEEDS:
        for check in ("accepts", "equivalence", "gradients", "generate"):
            m = _measure(spec, check, seed=seed, attacher=_broken_attacher("drops"))
            if m.passed or m.inconclusive:
                passed.append(f"seed {seed} {check}: {m.message[:200]}")
    assert not passed, passed


def test_verdicts_do_not_depend_on_the_spec_file_name(tmp_path):
    """The same spec under three names: identical measurements, cell by cell."""
    copies = []
    for new in ("qwen", "zz_copy", "a1"):
        shutil.copy(SPEC_DIR / "qwen.yaml", tmp_path / f"{new}.yaml")
        copies.append(load_spec(tmp_path / f"{new}.yaml"))
    for variant, adapter, check in (("unfixed", "harness", "generate"), ("p_eq_heads", "naive", "generate"),
                                    ("default", "harness", "equivalence")):
        metrics = {s.name: _measure(s, check, variant, adapter).metric for s in copies}
        assert len(set(metrics.values())) == 1, (variant, adapter, check, metrics)


def test_the_real_adapter_attacher_is_the_default():
    bench = Bench(Cell(_spec("llama"), _spec("llama").variant("default"), "harness", "accepts", "transformers"),
                  _model(str(SPEC_DIR / "llama.yaml")), Settings())
    assert bench._attacher is real_attach


def test_the_bare_model_failing_in_the_oracle_is_an_error_even_where_a_failure_is_declared(monkeypatch):
    """The plugin's set-up catches a model that fails on every forward (the spec check); one that fails
    only where the oracle runs it still never hides behind a declaration."""
    from harness.core.spec import SPEC_DIR, load_spec
    from harness.matrix import checks
    from harness.matrix.cells import Cell
    from harness.matrix.oracle import OracleError
    from harness.matrix.verdict import settle
    from harness.reporting.results import library_versions

    spec = load_spec(SPEC_DIR / "llama.yaml")
    cell = Cell(spec, spec.variant("default"), "peft", "generate", "transformers")
    versions = library_versions()
    assert cell.expected_failure(versions) is not None  # declared: PEFT's generate() under transformers 5

    def failing(check, bench):
        raise OracleError("the model without any adapter failed in greedy_full_recompute: RuntimeError: x")

    monkeypatch.setattr(checks, "run", failing)
    v = settle(cell, None, versions)
    assert v.status == "error" and "without any adapter failed" in v.message
