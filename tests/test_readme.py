"""The README is the front page: its quickstart keeps exactly two commands, its example runs as written,
its links land on real pages and headings of the documentation site, and its figures are the benchmarks'."""

from __future__ import annotations

import re

import pytest

from _markdown import DOCS, ROOT, code_blocks, heading_anchors, page_text, run_script, scripts

README = ROOT / "README.md"
SCRIPTS = scripts([README])


def _section(path, title: str) -> str:
    return path.read_text().split(f"\n## {title}\n")[1].split("\n## ")[0]


def test_the_quickstart_keeps_exactly_two_commands_and_the_docs_show_the_same():
    block = re.search(r"```bash\n(.*?)```", _section(README, "Quickstart"), flags=re.S).group(1)
    commands = [line for line in block.splitlines() if line.strip()]
    assert len(commands) == 2 and all(c.startswith("bash scripts/setup.sh && .venv/bin/") for c in commands)
    assert "squeezelab demo" in commands[0] and "pytest --compress-budget" in commands[1]
    assert block in _section(DOCS / "index.md", "Quickstart")


def test_the_readme_stays_a_front_page():
    assert len(README.read_bytes()) < 12_000
    assert len(SCRIPTS) == 1 and not code_blocks(README, "toml")  # the other examples live in docs/


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_readme_example_runs(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run_script(name, SCRIPTS[name], capsys)


def test_the_readmes_links_land_on_pages_and_headings_of_the_site():
    pytest.importorskip("markdown", reason='the heading ids are MkDocs\'s: pip install "squeezelab[docs]"')
    links = re.findall(r"\]\((docs/[^)#\s]+)(?:#([^)\s]+))?\)", README.read_text())
    assert len(links) >= 10
    for page, anchor in links:
        assert (ROOT / page).is_file(), page
        assert not anchor or anchor in heading_anchors(ROOT / page), f"{page}#{anchor}"


def test_the_readmes_figures_are_the_benchmarks_pages():
    """Every figure of the headline table is on the benchmarks page: moved there, never made up here."""
    rows = [line for line in _section(README, "Measured").splitlines() if line.startswith("| ") and "---" not in line]
    figures = [f for row in rows[1:] for f in re.findall(r"\d+\.\d+×|\b0\.\d{3,4}\b|\b\d{1,3}(?:,\d{3})+\b", row)]
    assert len(rows) >= 4 and len(figures) >= 10
    benchmarks = page_text(DOCS / "benchmarks.md")  # with the tables the benchmarks wrote
    assert [f for f in figures if f not in benchmarks] == []
    assert all(re.search(r"AVX2|VNNI", row) for row in rows[1:])  # each row names its CPU kind
