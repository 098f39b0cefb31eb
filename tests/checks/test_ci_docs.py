"""The "Gates over time" page shows what the plugin does: its budget parses, its options exist, its workflow is sound.

The GitHub Actions workflow cannot run here; what can be checked without GitHub is: it is valid YAML,
it gates on pushes to main and on pull requests, it saves the result as the artifact it fetches on a
pull request, it compares only when that file exists, and every pytest option it passes is one of
the plugin's.
"""

from __future__ import annotations

import re

import pytest
import yaml
from _markdown import DOCS, code_blocks

from squeezelab.checks.budget import REGRESSION_KEYS, budgets_from_table

PAGE = DOCS / "guide" / "ci.md"


def _plugin_options(pytestconfig: pytest.Config) -> set[str]:
    group = pytestconfig._parser.getgroup("compress-budget")
    return {name for option in group.options for name in option.names()}


def test_the_pages_budget_sets_every_regression_limit():
    import tomllib

    (toml,) = code_blocks(PAGE, "toml")
    budget = budgets_from_table(tomllib.loads(toml)["tool"]["squeezelab"]["budget"], "ci.md")["default"]
    assert all(getattr(budget, key) is not None for key in REGRESSION_KEYS)


def test_every_option_on_the_page_is_the_plugins(pytestconfig):
    text = PAGE.read_text()
    used = set(re.findall(r"--compress-budget[\w-]*", text))
    assert {"--compress-budget-save", "--compress-budget-compare", "--compress-budget-markdown", "--compress-budget-cache"} <= used
    assert used <= _plugin_options(pytestconfig)


def test_the_workflow_saves_on_main_and_compares_a_pull_request_with_mains_artifact(pytestconfig):
    (workflow,) = code_blocks(PAGE, "yaml")
    flow = yaml.safe_load(workflow)
    triggers = flow[True]  # YAML 1.1 reads the key `on` as true
    assert triggers["push"]["branches"] == ["main"] and "pull_request" in triggers
    assert flow["permissions"]["actions"] == "read"  # gh run download reads another run's artifact
    steps = flow["jobs"]["gates"]["steps"]
    by_name = {step.get("name"): step for step in steps}
    fetch, gate = by_name["Fetch the last accepted result (main's)"], by_name["Gate"]
    upload = next(step for step in steps if step.get("uses", "").startswith("actions/upload-artifact@"))
    assert fetch["if"] == "github.event_name == 'pull_request'" and "--name compress-gates --dir accepted" in fetch["run"]
    assert upload["with"]["name"] == "compress-gates" and "gates.json" in upload["with"]["path"]
    assert upload["if"] == "always()"  # a failing gate still leaves its result and summary
    assert "--compress-budget-save=gates.json" in gate["run"]
    assert "if [ -f accepted/gates.json ]; then compare=\"--compress-budget-compare=accepted/gates.json\"" in gate["run"]
    cache = next(step for step in steps if step.get("uses", "").startswith("actions/cache@"))
    assert cache["with"]["path"] == "~/.cache/squeezelab/gate-baselines"  # default_baseline_dir() without $SQUEEZELAB_CACHE
    assert all(re.fullmatch(r"[\w-]+/[\w-]+@v\d+", step["uses"]) for step in steps if "uses" in step)
    options = set(re.findall(r"--compress-budget[\w-]*", gate["run"]))
    assert options <= _plugin_options(pytestconfig)


def test_the_default_cache_folder_is_the_one_the_workflow_keeps(monkeypatch, tmp_path):
    from squeezelab.checks.baseline_cache import default_baseline_dir

    monkeypatch.delenv("SQUEEZELAB_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_baseline_dir() == tmp_path / ".cache" / "squeezelab" / "gate-baselines"
