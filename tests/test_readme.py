"""The README's examples run as written: Python blocks as scripts, the budget example under the plugin."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

try:  # The budget example's encoder test builds a Hugging Face BERT. Its ~1,500 modules are loaded here,
    # outside pytester's run (which unloads what it imports): torch._inductor's operators cannot be
    # registered twice in one process.
    from transformers import BertModel
except ImportError:  # pragma: no cover - the [models] extra is part of [dev]
    BertModel = None

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


def test_readme_budget_example_passes_under_the_plugin(pytester, gate_timer):
    # gate_timer: real timings; under SQUEEZELAB_SCRAMBLE_TIMINGS the speed gates judge a cost model by size
    if BertModel is None:
        pytest.skip('the budget example gates a BERT: pip install "squeezelab[models]"')
    pytester.makepyprojecttoml(TOML[0])
    pytester.makepyfile(test_readme_budget=TEST_BLOCKS[0])
    result = pytester.runpytest("--compress-budget", "--compress-budget-report=r.json")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*digits*speedup*pass", "*digits*latency_ms*pass"])
    result.stdout.fnmatch_lines(["*encoder*cosine_drop*pass", "*metric cosine to fp32", "*cosine_drop: 95% CI*t on paired*"])
    checks = {c["test"].split("::")[1]: c for c in json.loads((pytester.path / "r.json").read_text())["checks"]}
    encoder = checks["test_int8_encoder_keeps_its_embeddings"]
    assert encoder["metric"] == "cosine to fp32" and encoder["figures"][0]["name"] == "cosine_drop"
    assert checks["test_int8_model_fits_the_budget"]["figures"][0]["name"] == "accuracy_drop"
