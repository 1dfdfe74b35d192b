"""The HTML report is a page a person reads: one compact table, a symbol and a colour per cell, the
message on hover (title) and on click (<details>), rows sortable by model or family, the heatmap
linked. Checked as HTML, and in a real browser (headless Chromium) where one is installed."""
from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fake_runs import write_run

from harness.cli import main
from harness.core import names
from harness.reporting.htmltable import MESSAGE_IN_TITLE, SYMBOLS
from harness.reporting.plots import STATUS_COLORS

LONG = "RuntimeError: " + "x" * 600 + " the end"
# rows whose model order is not their family order, so sorting shows
FAMILY = {"a-llama": "zeta", "b-qwen": "alpha", "c-glm": "mid"}
CELLS = {**{("a-llama", a, c): "pass" for a in names.ADAPTERS for c in names.CHECKS},
         **{("b-qwen", "harness", c): "pass" for c in names.CHECKS},
         **{("b-qwen", "naive", c): "xfail" for c in names.CHECKS},
         ("c-glm", "harness", "accepts"): "fail", ("c-glm", "harness", "equivalence"): "error",
         ("c-glm", "harness", "gradients"): "timeout", ("c-glm", "naive", "accepts"): "inconclusive"}


@pytest.fixture
def run(tmp_path):
    run = write_run(tmp_path / "results", "small", CELLS, family=FAMILY)
    return run


def render(run: Path, out: Path, *extra) -> str:
    assert main(["report", str(run), "--format", "html", "-o", str(out), *extra]) == 0
    return out.read_text()


class Cells(HTMLParser):
    """The body cells of the page's table: status, colour, symbol, hover title and clicked text."""

    def __init__(self):
        super().__init__()
        self.tables, self.rows, self.cell, self.where, self.links, self.legend = 0, [], None, None, [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.tables += 1
        elif tag == "tr" and self.tables:
            self.rows.append([])
        elif tag == "td" and self.rows:
            self.cell = {"status": a.get("data-status"), "style": a.get("style") or "", "title": a.get("title"),
                         "symbol": "", "pop": "", "text": ""}
            self.rows[-1].append(self.cell)
        elif tag == "summary" and self.cell is not None:
            self.cell["title"], self.where = a.get("title"), "symbol"
        elif tag == "div" and a.get("class") == "pop":
            self.where = "pop"
        elif tag == "a":
            self.links.append(a.get("href"))
        elif tag == "span" and a.get("class", "").startswith("sw"):
            self.legend.append(a.get("style") or "")

    def handle_endtag(self, tag):
        if tag == "summary" and self.where == "symbol":
            self.where = None
        if tag == "td":
            self.cell, self.where = None, None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell["text"] += data
            if self.where:
                self.cell[self.where] += data


def parse(page: str) -> Cells:
    p = Cells()
    p.feed(page)
    return p


def test_one_table_with_a_symbol_colour_and_message_per_cell(run, tmp_path):
    p = parse(render(run, tmp_path / "report.html"))
    assert p.tables == 1
    body = [r for r in p.rows if r]  # the header rows hold <th> only
    cols = [(a, c) for a in names.ADAPTERS for c in names.CHECKS]
    assert len(body) == 3 and all(len(r) == 5 + len(cols) for r in body)  # 5 info columns per row
    seen = 0
    for row in body:
        model = row[0]["text"]
        assert row[1]["text"] == FAMILY[model]
        for cell, (adapter, check) in zip(row[5:], cols):
            status = CELLS.get((model, adapter, check))
            if status is None:
                assert cell["status"] is None and "not in the matrix" in cell["title"] and not cell["text"]
                continue
            seen += 1
            assert cell["status"] == status and f"background:{STATUS_COLORS[status]}" in cell["style"]
            assert cell["symbol"] == SYMBOLS[status]
            assert cell["title"].startswith(f"{model} · {adapter} · {check}: {status}\n")
            assert f"({model} {adapter} {check})" in cell["title"] and f"({model} {adapter} {check})" in cell["pop"]
    assert seen == len(CELLS)
    assert [s for s in p.legend if s][:len(SYMBOLS)] == [f"background:{STATUS_COLORS[s]}" for s in SYMBOLS]


def test_a_long_message_is_cut_in_the_hover_and_whole_on_click(tmp_path):
    import pyarrow.parquet as pq

    run = write_run(tmp_path / "results", "long", {("llama", "harness", "accepts"): "fail"}, parts=1)
    part = next(run.glob("part-*.parquet"))
    df = pq.read_table(part).to_pandas()
    df["message"] = LONG
    df.to_parquet(part)
    cell = next(c for r in parse(render(run, tmp_path / "r.html")).rows for c in r if c["status"] == "fail")
    assert LONG[:MESSAGE_IN_TITLE] in cell["title"] and "the end" not in cell["title"]
    assert "click for all" in cell["title"]
    assert LONG in cell["pop"]


def test_the_heatmap_is_linked_when_the_run_has_one(run, tmp_path):
    assert not [h for h in parse(render(run, tmp_path / "a.html")).links if "heatmap" in h]
    pytest.importorskip("matplotlib")
    out = tmp_path / "pages" / "b.html"
    out.parent.mkdir()
    links = [h for h in parse(render(run, out, "--plots")).links if "heatmap" in h]
    assert links == ["../results/runs/small/heatmap.png"]  # relative to the page: the folder can move
    assert (out.parent / links[0]).resolve() == (run / "heatmap.png").resolve() and (run / "heatmap.png").stat().st_size > 1000


# ----------------------------------------------------------------------------- in a real browser
def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no Chromium binary on PATH (apt-get install chromium): the page is checked as HTML only")


def browse(page: Path, *flags, fragment: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--no-first-run", *flags, page.resolve().as_uri() + fragment],
                          capture_output=True, text=True, timeout=120)


def colour_counts(png: Path, colours: dict[str, str]) -> dict[str, int]:
    from PIL import Image

    image = Image.open(png).convert("RGB")
    wanted = {tuple(int(hex_[i:i + 2], 16) for i in (1, 3, 5)): name for name, hex_ in colours.items()}
    counts = dict.fromkeys(colours, 0)
    for rgb, n in ((rgb, n) for n, rgb in image.getcolors(image.width * image.height)):
        if rgb in wanted:
            counts[wanted[rgb]] += n
    return counts


def test_the_page_in_headless_chromium_shows_the_legend_and_coloured_cells(run, tmp_path):
    pytest.importorskip("PIL", reason="PIL decodes the screenshot (it comes with matplotlib)")
    page = tmp_path / "report.html"
    render(run, page)
    shot = tmp_path / "shot.png"
    done = browse(page, f"--screenshot={shot}", "--window-size=1000,600")
    assert shot.is_file(), done.stderr[-2000:]
    from PIL import Image

    assert Image.open(shot).size == (1000, 600)
    counts = colour_counts(shot, {s: STATUS_COLORS[s] for s in ("pass", "fail", "xfail", "timeout")})
    swatch = 20 * 18  # a legend swatch; a table cell is a little larger; glyphs cover part of each
    # pass: 18 + 6 cells and its swatch; xfail: 6 cells and a swatch; fail, timeout: one cell and a swatch
    assert counts["pass"] > 20 * swatch * 0.7
    assert 6 * swatch * 0.7 < counts["xfail"] < 10 * swatch * 1.5
    assert swatch * 1.2 < counts["fail"] < 3 * swatch * 1.5 and swatch * 1.2 < counts["timeout"] < 3 * swatch * 1.5

    # control: the same page without colour shows none of them, so the counts above come from the page
    plain = tmp_path / "plain.html"
    plain.write_text(page.read_text().replace("background:#", "background-color:x#"))
    browse(plain, f"--screenshot={tmp_path / 'plain.png'}", "--window-size=1000,600")
    assert colour_counts(tmp_path / "plain.png", {"pass": STATUS_COLORS["pass"]})["pass"] == 0


class FirstColumn(HTMLParser):
    def __init__(self):
        super().__init__()
        self.in_body, self.row, self.models = False, None, []

    def handle_starttag(self, tag, attrs):
        if tag == "tbody":
            self.in_body = True
        elif tag == "tr" and self.in_body:
            self.row = []
        elif tag == "td" and self.row is not None:
            self.row.append("")

    def handle_data(self, data):
        if self.row is not None and self.row:
            self.row[-1] += data

    def handle_endtag(self, tag):
        if tag == "tr" and self.row is not None:
            self.models.append(self.row[0])
            self.row = None


def models_in_order(dom: str) -> list[str]:
    p = FirstColumn()
    p.feed(dom)
    return p.models


@pytest.mark.parametrize("fragment, order", [("", ["a-llama", "b-qwen", "c-glm"]),
                                             ("#sort=family", ["b-qwen", "c-glm", "a-llama"]),  # alpha, mid, zeta
                                             ("#sort=model", ["a-llama", "b-qwen", "c-glm"])])
def test_rows_sort_by_family_or_model_in_the_browser(run, tmp_path, fragment, order):
    page = tmp_path / "report.html"
    render(run, page)
    done = browse(page, "--dump-dom", fragment=fragment)
    assert "<tbody>" in done.stdout, done.stderr[-2000:]
    assert models_in_order(done.stdout) == order


# ----------------------------------------------------------------------------- which run a name means
def test_a_run_id_wins_over_a_local_folder_that_is_not_a_run(run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "small").mkdir()  # e.g. a folder of notes named like the run
    assert main(["report", "small", "--format", "md"]) == 0
    assert "run `small`" in capsys.readouterr().out


def test_a_name_that_is_both_a_run_id_and_a_run_folder_is_ambiguous(run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_run(tmp_path / "elsewhere", "small", {("gpt2", "harness", "accepts"): "pass"})
    shutil.copytree(tmp_path / "elsewhere" / "runs" / "small", tmp_path / "small")
    assert main(["report", "small"]) == 2
    err = capsys.readouterr().err
    assert "small is ambiguous" in err and "./small" in err and len(err.strip().splitlines()) == 1
    assert main(["report", "./small"]) == 0  # the folder, spelled as one
    assert "gpt2" in capsys.readouterr().out
    assert main(["report", "results/runs/small"]) == 0
    assert "a-llama" in capsys.readouterr().out
