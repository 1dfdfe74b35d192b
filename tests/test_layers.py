"""harness/ is in layers and imports run one way: a module may import its own layer and those below it.

core <- reporting <- matrix <- probe <- cli; reference (model code) imports none of them.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "harness"
ORDER = ["core", "reporting", "matrix", "probe", "cli"]
FORBIDDEN = {layer: set(ORDER[i + 1:]) for i, layer in enumerate(ORDER)}
FORBIDDEN["reference"] = set(ORDER)


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "harness" and parts[1] in FORBIDDEN else None


def imported_modules(path: Path, package: str):
    """Absolute names of every harness module ``path`` imports (relative imports resolved)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            yield base
            yield from (f"{base}.{a.name}" for a in node.names)


def modules():
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        package = ".".join(parts if parts[-1] == "__init__" else parts[:-1])
        yield path, package


@pytest.mark.parametrize("path,package", [pytest.param(p, k, id=str(p.relative_to(ROOT.parent))) for p, k in modules()])
def test_imports_run_one_way(path, package):
    own = layer_of(package + ".x") or layer_of(f"harness.{path.stem}")
    if own is None:
        pytest.skip("top-level module (package init, conftest, matrix entry point)")
    bad = sorted({m for m in imported_modules(path, package) if layer_of(m) in FORBIDDEN[own]})
    assert not bad, f"{path.relative_to(ROOT.parent)} ({own}) imports a layer above it: {bad}"


def test_the_check_sees_a_violation(tmp_path):
    """Control: a core module importing the matrix is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("from harness.matrix.oracle import full_context\nfrom ..reporting import results\n")
    found = {m for m in imported_modules(bad, "harness.core") if layer_of(m) in FORBIDDEN["core"]}
    assert "harness.matrix.oracle" in found and "harness.reporting" in found
