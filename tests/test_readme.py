"""The README's examples run as written: Python blocks as scripts, the budget example under the plugin."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)
SCRIPTS = [b for b in BLOCKS if "def test_" not in b]
TEST_BLOCKS = [b for b in BLOCKS if "def test_" in b]
TOML = re.findall(r"```toml\n(.*?)```", README, flags=re.S)


def test_readme_has_examples():
    assert len(SCRIPTS) >= 3 and len(TEST_BLOCKS) == 1 and len(TOML) == 1


@pytest.mark.parametrize("index", range(len(SCRIPTS)))
def test_readme_example_runs(index, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(SCRIPTS[index], f"README.md[python block {index}]", "exec"), {})
    assert capsys.readouterr().out.strip()  # every example prints what it shows


def test_readme_budget_example_passes_under_the_plugin(pytester):
    pytester.makepyprojecttoml(TOML[0])
    pytester.makepyfile(test_readme_budget=TEST_BLOCKS[0])
    result = pytester.runpytest("--compress-budget", "--compress-budget-report=r.json")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*digits*speedup*pass", "*digits*latency_ms*pass"])
