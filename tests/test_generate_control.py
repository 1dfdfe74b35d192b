"""The generate checks' control where the prefix changes no greedy token: the tiny Gemma's greedy output
echoes its input with or without a prefix, so the step logits carry the control. A correct adapter passes,
one that drops the prefix fails (not inconclusive), and where the prefix moves neither tokens nor logits
past the bar the cell stays inconclusive."""
import pytest

from harness.core.models import build_model
from harness.core.spec import SPEC_DIR, load_spec
from harness.matrix.bench import Bench, Settings
from harness.matrix.cells import Cell
from harness.matrix.checks import run as run_check


def _dropping(adapter, base, spec, variant, p):
    from harness.core.prefix_model import PrefixModel
    from harness.matrix.adapters.ours import PrefixModelAttached

    pm = PrefixModel(base, spec, p)
    pm.prefix_cache = lambda batch_size: None  # holds a prefix, never hands it over
    return PrefixModelAttached(pm)


@pytest.fixture(scope="module")
def gemma():
    spec = load_spec(SPEC_DIR / "gemma.yaml")
    return spec, build_model(spec)


@pytest.mark.parametrize("check", ["generate", "hf_generate"])
def test_the_step_logits_are_the_control_when_no_token_changes(gemma, check):
    spec, model = gemma
    cell = Cell(spec, spec.variant("default"), "harness", check, "transformers")
    m = run_check(check, Bench(cell, model, Settings()))
    assert m.passed and not m.inconclusive, m.message
    assert m.details["control_changed"] == 0 and m.details["control_logits_moved"] > 1e-3, m.message
    assert "moves the step logits" in m.message
    dropped = run_check(check, Bench(cell, model, Settings(), attacher=_dropping))
    assert not dropped.passed and not dropped.inconclusive, dropped.message
    assert "step logits off by more than the bar" in dropped.message


def test_neither_tokens_nor_logits_moved_is_inconclusive(gemma, monkeypatch):
    """With a bar above what the prefix moves (bfloat16's 5e-2 on this model), nothing can show a dropped
    prefix: inconclusive, never a pass."""
    spec, model = gemma
    cell = Cell(spec, spec.variant("default"), "harness", "generate", "transformers")
    bench = Bench(cell, model, Settings())
    monkeypatch.setattr(type(bench), "tolerance", property(lambda self: 5e-2))
    m = run_check("generate", bench)
    assert m.inconclusive and "nor moved the step logits" in m.message, m.message
