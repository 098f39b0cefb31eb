"""The documentation site's examples run as written: every page's Python blocks as scripts, the budget
example under the plugin, the command lines against the real parser; and the site builds strictly."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys

import pytest

from _markdown import DOCS, RESULTS, ROOT, code_blocks, doc_pages, included_results, run_script, scripts

try:  # The budget example's encoder test builds a Hugging Face BERT. Its ~1,500 modules are loaded here,
    # outside pytester's run (which unloads what it imports): torch._inductor's operators cannot be
    # registered twice in one process.
    from transformers import BertModel
except ImportError:  # pragma: no cover - the [models] extra is part of [dev]
    BertModel = None

SCRIPTS = scripts(doc_pages())
BUDGETS = DOCS / "guide" / "budgets.md"


def test_every_page_is_in_the_navigation_and_every_python_block_is_an_example():
    nav = set(re.findall(r"^\s*- [^:\n]+: (\S+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), flags=re.M))
    assert nav == {str(p.relative_to(DOCS)) for p in doc_pages()}
    assert len(SCRIPTS) >= 15
    test_blocks = {p.name: [b for b in code_blocks(p, "python") if "def test_" in b] for p in doc_pages()}
    assert {name: len(blocks) for name, blocks in test_blocks.items() if blocks} == {"budgets.md": 1}


def test_every_notebook_is_a_page_of_the_site():
    """docs/notebooks/ links each notebook of notebooks/ (rendered as saved by mkdocs-jupyter), and the nav lists it."""
    notebooks = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    linked = sorted((DOCS / "notebooks").glob("*.ipynb"))
    assert [p.name for p in linked] == notebooks and notebooks
    assert all(p.is_symlink() and p.resolve() == ROOT / "notebooks" / p.name for p in linked)
    nav = set(re.findall(r"^\s*- [^:\n]+: (notebooks/\S+\.ipynb)\s*$", (ROOT / "mkdocs.yml").read_text(), flags=re.M))
    assert nav == {f"notebooks/{name}" for name in notebooks}


def test_every_benchmark_table_on_the_site_is_a_file_a_benchmark_wrote():
    """The site's benchmark tables are included from ``benchmarks/results`` (written by ``--markdown``), each
    once, each with the header that says where, when and by which command it was measured."""
    included = [name for page in doc_pages() for name in included_results(page)]
    written = sorted(p.name for p in RESULTS.glob("*.md"))
    assert sorted(included) == written and written
    for name in written:
        head = (RESULTS / name).read_text().splitlines()[:2]
        assert head[0].startswith("<!-- written by benchmarks/") and "rerun it to refresh" in head[0], name
        assert head[1].startswith("Measured on 20") and re.search(r"\*\*(AVX-512 VNNI|AVX2 only)", head[1]), name


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_docs_example_runs(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run_script(name, SCRIPTS[name], capsys)


def test_the_budget_example_passes_under_the_plugin(pytester, gate_timer):
    # gate_timer: real timings; under SQUEEZELAB_SCRAMBLE_TIMINGS the speed gates judge a cost model by size
    if BertModel is None:
        pytest.skip('the budget example gates a BERT: pip install "squeezelab[models]"')
    (toml,) = code_blocks(BUDGETS, "toml")
    (tests,) = [b for b in code_blocks(BUDGETS, "python") if "def test_" in b]
    pytester.makepyprojecttoml(toml)
    pytester.makepyfile(test_budget_example=tests)
    result = pytester.runpytest("--compress-budget", "--compress-budget-report=r.json")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*digits*speedup*pass", "*digits*latency_ms*pass"])
    result.stdout.fnmatch_lines(["*encoder*cosine_drop*pass", "*metric cosine to fp32", "*cosine_drop: 95% CI*t on paired*"])
    checks = {c["test"].split("::")[1]: c for c in json.loads((pytester.path / "r.json").read_text())["checks"]}
    encoder = checks["test_int8_encoder_keeps_its_embeddings"]
    assert encoder["metric"] == "cosine to fp32" and encoder["figures"][0]["name"] == "cosine_drop"
    assert checks["test_int8_model_fits_the_budget"]["figures"][0]["name"] == "accuracy_drop"


def test_the_command_line_page_uses_real_commands_and_options():
    from squeezelab.cli import build_parser

    lines = [line for block in code_blocks(DOCS / "guide" / "cli.md", "bash") for line in block.splitlines()
             if line.startswith("squeezelab ")]
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert {shlex.split(line)[1] for line in lines} == {"compress", "sweep", "report", "gate"}
    for line in lines:
        words = shlex.split(line)
        options = sub.choices[words[1]]._option_string_actions
        assert [w for w in words if w.startswith("--") and w not in options] == [], line


def test_the_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocs", reason='the site is built with MkDocs: pip install "squeezelab[docs]"')
    pytest.importorskip("material", reason='the site uses the Material theme: pip install "squeezelab[docs]"')
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "site" / "guide" / "fidelity.html").is_file()
    for page in (tmp_path / "site").rglob("*.html"):  # offline: no script, style sheet or font from elsewhere
        html = page.read_text()
        assert not re.findall(r"<script[^>]+src=\"https?:|<link[^>]+href=\"https?:|fonts\.googleapis", html), page
