"""Gates over time, run in-process with pytester in a project set up as a team would set it up.

The team's ``pyproject.toml`` holds a fixed budget and the regression limits; its conftest builds the
shipped model and data; its one test gates them. CI saves the run on main
(``--compress-budget-save``) and compares each pull request with it (``--compress-budget-compare``).
Which candidate and which data a run sees is chosen by environment variables, as a changed model or
data set would be. Times come from a cost model by file size (``CostModel.by_size``), never the
clock: no assertion here depends on how fast this machine is.

The data are built so the outcome is known exactly: the fp32 model's two logits are ``x0`` and ``x1``,
every sample has ``|x0 - x1| = 3`` except six with ``x0 - x1 = 0.25``; the "regressed" candidate adds
0.5 to the second logit, which flips exactly those six (accuracy 1.0 -> 0.97 on 200 samples).
"""

from __future__ import annotations

import json

import pytest

CONFTEST = '''
import os

import numpy as np
import pytest
import torch

from squeezelab.engine.measurement.timing import CostModel, using_timer

CLOSE = 6  # samples near the decision boundary: the regressed candidate flips exactly these


def _data(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    x[:, 1] = x[:, 0] - np.where(np.arange(n) % 2 == 0, 3.0, -3.0)
    x[:CLOSE, 1] = x[:CLOSE, 0] - 0.25
    return x, (x[:, 1] > x[:, 0]).astype(np.int64)


def _linear(bias=0.0):
    layer = torch.nn.Linear(4, 2)
    with torch.no_grad():
        layer.weight.zero_()
        layer.weight[0, 0] = layer.weight[1, 1] = 1.0  # logits = (x0, x1 + bias)
        layer.bias.zero_()
        layer.bias[1] = bias
    return layer.eval()


def _bigger():
    """The same function with a 64-wide identity layer in front: more bytes, same predictions."""
    widen = torch.nn.Linear(4, 64)
    with torch.no_grad():
        widen.weight.zero_()
        widen.weight[:4, :4] = torch.eye(4)
        widen.bias.zero_()
    head = torch.nn.Linear(64, 2)
    with torch.no_grad():
        head.weight.zero_()
        head.weight[0, 0] = head.weight[1, 1] = 1.0
        head.bias.zero_()
    return torch.nn.Sequential(widen, head).eval()


@pytest.fixture(autouse=True)
def modelled_time():
    with using_timer(CostModel.by_size()):  # milliseconds proportional to bytes: the same on every machine
        yield


@pytest.fixture
def baseline():
    return _linear()


@pytest.fixture
def candidate():
    return {"good": _linear(), "regressed": _linear(bias=0.5), "bigger": _bigger()}[os.environ["CANDIDATE"]]


@pytest.fixture
def data():
    return _data(int(os.environ.get("N_SAMPLES", "200")), int(os.environ.get("DATA_SEED", "0")))
'''

TEST = '''
def test_shipped_model(compress_budget, baseline, candidate, data):
    compress_budget.check(baseline, candidate, data=data)
'''

BUDGET = """[tool.squeezelab.budget]
max_accuracy_drop = 0.05    # the fixed budget: 6 lost samples of 200 (0.03) are within it
max_regression = 0.01       # against the saved run: they are not
max_size_growth = 0.05
min_speedup_ratio = 0.9
latency_rounds = 3
"""

KEY = "test_gate.py::test_shipped_model"


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyprojecttoml(BUDGET)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_gate=TEST)
    return pytester


def _run(project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, candidate: str, *args: str, seed: int = 0) -> tuple:
    """One gate run on ``candidate``: pytest's result and the run's report (every check's figures by name)."""
    monkeypatch.setenv("CANDIDATE", candidate)
    monkeypatch.setenv("DATA_SEED", str(seed))
    result = project.runpytest("--compress-budget", "--compress-budget-report=report.json", "-p", "no:cacheprovider", *args)
    report = json.loads((project.path / "report.json").read_text())["checks"]
    assert len(report) == 1 and "Traceback" not in result.stdout.str()
    check = report[0]
    return result, check, {f["name"]: f for f in check["figures"]}


def _save(project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, candidate: str = "good", seed: int = 0) -> dict:
    result, check, _ = _run(project, monkeypatch, candidate, "--compress-budget-save=gates.json", seed=seed)
    result.assert_outcomes(passed=1)
    return json.loads((project.path / "gates.json").read_text())


def test_the_saved_file_holds_what_a_later_run_compares(project, monkeypatch):
    saved = _save(project, monkeypatch)
    assert saved["format"] == "squeezelab gate results" and saved["format_version"] == 1
    assert set(saved["cpu"]) == {"name", "int8_flags", "arch"} and saved["versions"]["onnxruntime"]
    gate = saved["gates"][KEY]
    assert gate["test"] == KEY and gate["passed"] is True and len(gate["data_fingerprint"]) == 64
    assert gate["candidate"]["value"] == 1.0 and gate["candidate"]["scores"]["n"] == 200
    assert gate["candidate"]["size_bytes"] > 0 and gate["candidate"]["speedup"] == pytest.approx(1.0)
    assert gate["timing"] == "cost model: by_size(10 ms/MB) (not measured)"


def test_a_candidate_that_lost_a_few_samples_fails_paired_against_the_saved_run(project, monkeypatch):
    _save(project, monkeypatch)
    result, check, figures = _run(project, monkeypatch, "regressed", "--compress-budget-compare=gates.json")
    result.assert_outcomes(failed=1)
    assert figures["accuracy_drop"]["passed"] is True  # the fixed budget cannot see it
    regression = figures["accuracy_regression"]
    assert regression["passed"] is False and regression["value"] == pytest.approx(6 / 200)
    assert regression["method"] == "exact-binomial" and regression["low"] <= 0.03 <= regression["high"]
    result.stdout.fnmatch_lines([
        "*accuracy_regression 0.0300 > max 0.0100 (over by 0.0200): FAIL, gate 'measured'; 95% CI *, exact binomial, "
        "6 vs 0 discordant of n=200, saved run 1.0000 -> now 0.9700, paired on the same 200 samples*",
    ])


def test_an_unchanged_candidate_passes_against_the_saved_run_every_time(project, monkeypatch):
    _save(project, monkeypatch)
    for _ in range(3):
        result, check, figures = _run(project, monkeypatch, "good", "--compress-budget-compare=gates.json")
        result.assert_outcomes(passed=1)
        regression = figures["accuracy_regression"]
        assert (regression["value"], regression["low"], regression["high"]) == (0.0, 0.0, 0.0)
        assert figures["size_growth"]["value"] == 0.0 and figures["speedup_ratio"]["value"] == pytest.approx(1.0)
        assert check["not_judged"] == []


def test_changed_data_cannot_be_paired_and_says_so(project, monkeypatch):
    _save(project, monkeypatch)
    for candidate, outcome in (("good", {"passed": 1}), ("regressed", {"failed": 1})):
        result, _, figures = _run(project, monkeypatch, candidate, "--compress-budget-compare=gates.json", seed=1)
        result.assert_outcomes(**outcome)
        regression = figures["accuracy_regression"]
        assert regression["low"] is None and "cannot pair: the data differ (fingerprint saved " in regression["note"]
        assert "compared the summary figures, no interval" in regression["note"]
    assert regression["value"] == pytest.approx(0.03)  # the summary figures: 1.0 saved, 0.97 now
    result.stdout.fnmatch_lines(["*accuracy_regression 0.0300 > max 0.0100*cannot pair: the data differ*"])


def test_speed_against_a_run_saved_on_another_cpu_is_refused_with_the_reason(project, monkeypatch):
    saved = _save(project, monkeypatch)
    saved["cpu"] = {"name": "Imaginary CPU 9000", "int8_flags": ["avx2"], "arch": "x86_64"}
    (project.path / "gates.json").write_text(json.dumps(saved))
    result, check, figures = _run(project, monkeypatch, "good", "--compress-budget-compare=gates.json")
    result.assert_outcomes(passed=1)  # not judged is neither a pass nor a failure of speed: the other gates decide
    assert "speedup_ratio" not in figures and {"accuracy_regression", "size_growth"} <= set(figures)
    (reason,) = check["not_judged"]
    assert reason.startswith("min_speedup_ratio: refused: the saved run was timed on 'Imaginary CPU 9000' (x86_64, avx2)")
    assert "a speedup depends on the CPU's int8 kernels" in reason
    result.stdout.fnmatch_lines(["*CompressBudgetWarning: compress budget 'default': not judged: min_speedup_ratio: refused*",
                                 "*not judged: min_speedup_ratio: refused: the saved run was timed on 'Imaginary CPU 9000'*"])


def test_a_bigger_slower_candidate_fails_size_growth_and_speedup_ratio(project, monkeypatch):
    _save(project, monkeypatch)
    result, _, figures = _run(project, monkeypatch, "bigger", "--compress-budget-compare=gates.json")
    result.assert_outcomes(failed=1)
    growth, ratio = figures["size_growth"], figures["speedup_ratio"]
    assert growth["passed"] is False and growth["value"] > 0.05
    assert ratio["passed"] is False and ratio["value"] == pytest.approx(1 / (1 + growth["value"]), rel=1e-6)  # time ~ bytes
    assert figures["accuracy_regression"]["passed"] is True
    result.stdout.fnmatch_lines(["*size_growth * > max 0.0500 (over by *, saved run * -> * bytes)*",
                                 "*speedup_ratio * < min 0.9000*"])


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, "gates.json' does not exist; write one with pytest --compress-budget --compress-budget-save=PATH"),
        ("{not json", "gates.json' is not JSON (Expecting property name"),
        ('{"checks": []}', "gates.json' is not a saved gate results file (it has no \"format\": \"squeezelab gate results\")"),
        ('{"format": "squeezelab gate results", "format_version": 99, "gates": {}, "cpu": {}}',
         "has format_version 99; this squeezelab (*) reads version 1: save the run again"),
        ('{"format": "squeezelab gate results", "format_version": 1, "cpu": {}, "gates": {"t": {"baseline": {}}}}',
         "gate 't' has no \"candidate\" row"),
    ],
    ids=["missing", "not-json", "not-saved-results", "newer-format", "no-candidate"],
)
def test_a_missing_or_malformed_saved_file_is_a_usage_error(project, content, words):
    if content is not None:
        (project.path / "gates.json").write_text(content)
    result = project.runpytest("--compress-budget", "--compress-budget-compare=gates.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: --compress-budget-compare: *{words}*"])


@pytest.mark.parametrize("option", ["--compress-budget-save=g.json", "--compress-budget-compare=g.json",
                                    "--compress-budget-markdown=g.md", "--compress-budget-cache=c"])
def test_history_options_need_the_gates_on(project, option):
    result = project.runpytest(option)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{option.split('=')[0]} needs --compress-budget (the gates are off)*"])


def test_a_budget_of_regression_limits_alone_needs_a_saved_run(pytester, monkeypatch):
    pytester.makepyprojecttoml("[tool.squeezelab.budget]\nmax_regression = 0.01\n")
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_gate=TEST)
    monkeypatch.setenv("CANDIDATE", "good")
    result = pytester.runpytest("--compress-budget")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*could not run: budget 'default' sets only limits against a saved run (max_regression) "
                                 "and no saved run was given*--compress-budget-compare=PATH*"])


def test_the_markdown_summary_goes_to_its_file_and_to_the_ci_step_summary(project, monkeypatch):
    _save(project, monkeypatch)
    step_summary = project.path / "step_summary.md"
    step_summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step_summary))
    result, _, _ = _run(project, monkeypatch, "regressed", "--compress-budget-compare=gates.json",
                        "--compress-budget-markdown=gates.md")
    result.assert_outcomes(failed=1)
    text = (project.path / "gates.md").read_text()
    assert step_summary.read_text() == "earlier step\n" + text + "\n"  # appended, as each GitHub step does
    lines = text.splitlines()
    assert lines[0] == "## squeezelab compression gates"
    assert "1 gated check(s): 0 pass, 1 fail. Budget: `" in lines[2] and "Compared with the saved run `" in lines[2]
    header = lines.index("| gate | metric | baseline -> candidate | drop [interval] | vs saved run | size | speedup [interval] | verdict |")
    row = [cell.strip() for cell in lines[header + 2].strip("|").split("|")]
    assert row[0] == f"`{KEY}` (default)" and row[1] == "top-1 accuracy"
    assert row[2] == "100.00 % -> 97.00 %" and row[3].startswith("3.00 pp [")
    assert row[4].startswith("accuracy_regression 0.0300 (paired, max 0.0100); size +0.0 % (max +5.0 %); speedup x1.000")
    assert row[6].startswith("1.00x") and row[6].endswith("(modelled)") and row[7] == "**FAIL**"
    assert any(line.startswith(f"- `{KEY}`: accuracy_regression 0.0300 > max 0.0100") for line in lines)
    assert f"- `{KEY}`: read from the cache (export and outputs skipped)" in lines  # the saving run cached it


def test_the_fp32_baseline_comes_from_the_cache_on_a_second_run(project, monkeypatch):
    first = _run(project, monkeypatch, "good", "--compress-budget-cache=cache")
    second = _run(project, monkeypatch, "good", "--compress-budget-cache=cache")
    assert (first[1]["baseline_cache"], second[1]["baseline_cache"]) == ("stored", "hit")
    assert first[1]["summary"] == second[1]["summary"]  # the cached export and outputs give the same figures
    second[0].stdout.fnmatch_lines(["*fp32 baseline read from the cache (export and outputs skipped) for 1 of 1 check(s)*"])
    (entry,) = [p for p in (project.path / "cache").glob("*/*") if p.is_dir()]
    (entry / "outputs.npy").write_bytes(b"damaged")
    third = _run(project, monkeypatch, "good", "--compress-budget-cache=cache")
    assert third[1]["baseline_cache"] == "stored" and third[1]["summary"] == first[1]["summary"]
    third[0].stdout.fnmatch_lines(["*baseline cache entry * is corrupt; it is removed and the baseline measured again*"])
    off = _run(project, monkeypatch, "good", "--compress-budget-cache=none")
    assert off[1]["baseline_cache"] == "off"


TWO_TESTS = '''
import pytest


def test_shipped_model(compress_budget, baseline, candidate, data):
    compress_budget.check(baseline, candidate, data=data)


@pytest.mark.compress_budget(accuracy_gate="lenient")
def test_lenient_twice(compress_budget, baseline, candidate, data):
    compress_budget.check(baseline, candidate, data=data)
    compress_budget.check(baseline, candidate, data=data)
'''


def test_under_xdist_every_check_is_saved_under_its_key_and_judged_in_its_gate_mode(project, monkeypatch):
    project.makepyfile(test_gate=TWO_TESTS)
    monkeypatch.setenv("CANDIDATE", "good")
    project.runpytest("--compress-budget", "-n", "2", "--compress-budget-save=gates.json").assert_outcomes(passed=2)
    lenient = "test_gate.py::test_lenient_twice"
    assert sorted(json.loads((project.path / "gates.json").read_text())["gates"]) == [lenient, f"{lenient} #2", KEY]
    monkeypatch.setenv("CANDIDATE", "regressed")
    result = project.runpytest("--compress-budget", "-n", "2", "--compress-budget-compare=gates.json",
                               "--compress-budget-report=report.json")
    result.assert_outcomes(passed=1, failed=1)  # 'measured' fails on 0.03; 'lenient' reads the interval's low end
    checks = {c["key"]: c for c in json.loads((project.path / "report.json").read_text())["checks"]}
    assert sorted(checks) == [lenient, f"{lenient} #2", KEY]
    for key, passed in ((KEY, False), (lenient, True), (f"{lenient} #2", True)):
        regression = next(f for f in checks[key]["figures"] if f["name"] == "accuracy_regression")
        assert regression["passed"] is passed and regression["value"] == pytest.approx(0.03)
        mode = "measured" if key == KEY else "lenient"
        assert regression["mode"] == mode and regression["judged"] == (0.03 if mode == "measured" else regression["low"])
