"""The code blocks of the project's markdown (README.md, docs/**/*.md), and how an example block runs.

One reader for every page, so the README and the documentation site hold their examples to the same
rule: each ```python block is a script that runs as written and prints what it shows.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RESULTS = ROOT / "benchmarks" / "results"  # the tables benchmarks write (`--markdown`), included by the site
# pymdownx.snippets' include line, as mkdocs.yml configures it (base path benchmarks/results).
_SNIPPET = re.compile(r'^--8<-- "([^"]+)"\s*$', flags=re.M)
# A fence opens at the start of a line with its language and closes at the start of a line.
_FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```", flags=re.S | re.M)


def code_blocks(path: Path, language: str) -> list[str]:
    """The bodies of ``path``'s fenced blocks in ``language`` (``"python"``, ``"toml"``, ``"bash"``), in order."""
    return [body for lang, body in _FENCE.findall(path.read_text()) if lang == language]


def doc_pages() -> list[Path]:
    """Every page of the documentation site."""
    return sorted(DOCS.rglob("*.md"))


def scripts(paths: list[Path]) -> dict[str, str]:
    """The ```python blocks of ``paths`` that are scripts (not pytest files), by a name that says where each is."""
    found = {}
    for path in paths:
        blocks = [b for b in code_blocks(path, "python") if "def test_" not in b]
        for index, body in enumerate(blocks):
            found[f"{path.relative_to(ROOT)}[python block {index}]"] = body
    return found


def run_script(name: str, source: str, capsys) -> None:
    """Run one example as a script in a fresh namespace; it must print something (what it shows)."""
    exec(compile(source, name, "exec"), {})
    assert capsys.readouterr().out.strip(), f"{name} printed nothing"


def included_results(path: Path) -> list[str]:
    """The benchmark result files ``path`` includes (``--8<-- "name.md"``)."""
    return _SNIPPET.findall(path.read_text())


def page_text(path: Path) -> str:
    """``path`` as the site shows it: each ``--8<--`` line replaced by the benchmark result file it names."""
    return _SNIPPET.sub(lambda m: (RESULTS / m.group(1)).read_text(), path.read_text())


def heading_anchors(path: Path) -> set[str]:
    """The ids MkDocs gives ``path``'s headings (Python-Markdown's toc slugs), for checking links into it."""
    from markdown.extensions.toc import slugify  # a dependency of mkdocs (the [docs] extra)

    text = _FENCE.sub("", page_text(path))
    return {slugify(h.strip(), "-") for h in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}
