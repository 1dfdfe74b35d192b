"""The committed compatibility table must describe the specs in model_specs/: every model row the
matrix runs by default, with its family, code source, KV layout and concat dim, and no other."""
from pathlib import Path

from harness.core import names
from harness.core.spec import load_specs
from harness.matrix import axes
from harness.matrix.cells import build_cells

DOC = Path(__file__).resolve().parent.parent / "docs" / "COMPATIBILITY.md"


def default_cells():
    """The default matrix on the CPU: every spec row under the dtype and attention axes, plus the mlp rows."""
    return axes.expand(build_cells(load_specs()), axes.parse_dtypes("auto", "cpu"), axes.parse_attn(None))


def table_rows(text: str) -> list[list[str]]:
    lines = [ln for ln in text.splitlines() if ln.startswith("| ")]
    return [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines]


def test_committed_table_rows_match_the_specs():
    rows = table_rows(DOC.read_text())
    header, body = rows[0], rows[1:]
    assert header[:5] == ["model", "family", "code", "KV layout", "concat dim"]
    in_doc = {tuple(r[:5]) for r in body}
    wanted = {(c.row, c.spec.family, c.code_source, str(c.spec.kv.layout), str(c.spec.kv.concat_dim))
              for c in default_cells()}
    assert in_doc == wanted, (
        "docs/COMPATIBILITY.md is out of date with model_specs/: regenerate it with "
        "`pytest -n auto harness/ --run-id docs && prefix-compat report results/runs/docs -o docs/COMPATIBILITY.md`"
    )


def test_committed_table_has_every_adapter_and_check():
    header = table_rows(DOC.read_text())[0]
    assert header[5:] == [f"{a}<br>{c}" for a in names.ADAPTERS for c in names.CHECKS]


def test_every_cell_of_the_default_matrix_is_in_the_table():
    body = table_rows(DOC.read_text())[1:]
    cells = {(r[0], i) for r in body for i, v in enumerate(r[5:]) if v != "-"}
    columns = [(a, c) for a in names.ADAPTERS for c in names.CHECKS]
    for cell in default_cells():
        assert (cell.row, columns.index((cell.adapter, cell.check))) in cells, cell.id
