"""The README says what the code does: its row columns are the store's, its commands exist."""
import re
from pathlib import Path

from harness.reporting.results import SCHEMA

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_the_columns_the_readme_lists_are_the_rows_columns():
    start = README.index("Rows carry")
    listed = README[start: README.index("Part files are", start)]
    named = set(re.findall(r"`([a-z_]+)`", listed))
    assert named == set(SCHEMA.names)


def test_every_prefix_compat_command_in_the_docs_exists():
    from harness.cli import main

    docs = [README] + [p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))]
    used = {m for text in docs for m in re.findall(r"prefix-compat ([a-z]+)", text)}
    assert {"runs", "report", "diff", "baseline", "plots", "validate", "probe"} <= used
    for command in sorted(used - {"probe"}):  # probe has its own parser (prefix-compat probe --help)
        try:
            main([command, "--help"])
        except SystemExit as e:
            assert e.code == 0, command
