"""The pytest plugin, run in-process with pytester: gates, budgets, output, xdist."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

# Points with exact figures, so each gate can be put just inside or just outside its limit.
HELPERS = '''
import pytest
from squeezelab.engine.measurement.point import Point

def _make(acc=0.95, size=1_000_000, ms=5.0, executable=True, label="int8", n=1000):
    return Point(label=label, recipe={}, value=acc, n_samples=n, size_bytes=size,
                 latency_ms=ms, latency_batch_size=1, latency_rounds=30, threads=1,
                 runtime="onnxruntime", weight_sparsity=0.0, bits=8, executable=executable)

@pytest.fixture
def make():
    return _make

@pytest.fixture
def base():
    return _make(acc=0.95, size=4_000_000, ms=10.0, label="fp32")
'''


def _project(pytester: pytest.Pytester, budget: str, test: str) -> None:
    pytester.makepyprojecttoml("[tool.squeezelab.budget]\n" + budget)
    pytester.makeconftest(HELPERS)
    pytester.makepyfile(test_gate=test)


def _check(candidate: str) -> str:
    return f"def test_gate(compress_budget, base, make):\n    compress_budget.check(base, make({candidate}))\n"


CASES = [
    # budget line, candidate that passes, candidate that fails, words of the failure
    ("max_accuracy_drop = 0.01", "acc=0.945", "acc=0.93", "accuracy_drop 0.0200 > max 0.0100 (over by 0.0100): FAIL, gate 'measured'; n=1000"),
    ("max_relative_accuracy_drop = 0.01", "acc=0.945", "acc=0.93", "relative_accuracy_drop 0.0211 > max 0.0100"),
    ("max_size_mb = 2.0", "size=1_500_000", "size=2_500_000", "size_mb 2.5000 > max 2.0000 (over by 0.5000, 2,500,000 bytes)"),
    ("min_compression = 4.0", "size=1_000_000", "size=2_000_000", "compression 2.0000 < min 4.0000 (over by 2.0000"),
    ("min_speedup = 1.5", "ms=5.0", "ms=8.0", "speedup 1.2500 < min 1.5000 (over by 0.2500"),
    ("max_latency_ms = 6", "ms=5.0", "ms=8.0", "latency_ms 8.0000 > max 6.0000"),
    ("require_executable = true", "executable=True", "executable=False", "candidate is SIMULATED"),
]


@pytest.mark.parametrize(("budget", "good", "bad", "words"), CASES, ids=[c[0].split()[0] for c in CASES])
def test_each_gate_passes_inside_and_fails_outside_its_limit(pytester, budget, good, bad, words):
    _project(pytester, budget, _check(good) + "\n\n" + _check(bad).replace("test_gate", "test_gate_bad"))
    result = pytester.runpytest("--compress-budget")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([f"*{words}*"])
    assert "Traceback" not in result.stdout.str() and "plugin.py" not in result.stdout.str()


def test_bad_input_to_check_fails_cleanly(pytester):
    test = (
        "def test_no_data(compress_budget, base, make):\n"
        "    import torch\n"
        "    compress_budget.check(torch.nn.Linear(4, 2), torch.nn.Linear(4, 2), example_inputs=torch.randn(1, 4))\n"
        "\n\ndef test_mixed(compress_budget, base):\n"
        "    import torch\n"
        "    compress_budget.check(base, torch.nn.Linear(4, 2))\n"
    )
    _project(pytester, "max_accuracy_drop = 0.01\n", test)
    result = pytester.runpytest("--compress-budget")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "*compress budget check could not run: the budget gates the drop of the measured metric*but no data "
            "was given: pass data=(inputs, targets), or data=(inputs, None)*",
            "*compress budget check could not run: pass baseline and candidate both as Points*",
        ]
    )
    assert "Traceback" not in result.stdout.str()


def test_labels_the_model_cannot_predict_fail_the_gate_instead_of_passing(pytester):
    """Regression targets under the top-1 metric once read as accuracy 0 - 0 = no drop: a pass."""
    test = (
        "import numpy as np\n"
        "import torch\n\n\n"
        "def test_regression_targets(compress_budget):\n"
        "    torch.manual_seed(0)\n"
        "    model = torch.nn.Linear(4, 3).eval()\n"
        "    x = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)\n"
        "    y = x.sum(axis=1) * 0.5  # continuous targets, not class indices\n"
        "    compress_budget.check(model, model, data=(x, y))\n"
    )
    _project(pytester, "max_accuracy_drop = 0.01\n", test)
    result = pytester.runpytest("--compress-budget")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "compress budget check could not run: top-1 accuracy needs integer class indices in [0, 3)" in out
    assert "(the model has 3 outputs); 40 label(s) are not whole numbers" in out and "pass metric=" in out
    assert "Traceback" not in out


def test_improvement_never_fails(pytester):
    _project(pytester, "max_accuracy_drop = 0.0\nmin_speedup = 1.0\n", _check("acc=0.99, ms=2.0"))
    pytester.runpytest("--compress-budget").assert_outcomes(passed=1)


def test_marker_overrides_the_file(pytester):
    test = (
        "@pytest.mark.compress_budget(max_accuracy_drop=0.05)\n" + _check("acc=0.93")
        + "\n\ndef test_unmarked(compress_budget, base, make):\n    compress_budget.check(base, make(acc=0.93))\n"
    )
    _project(pytester, "max_accuracy_drop = 0.001\n", "import pytest\n" + test)
    pytester.runpytest("--compress-budget").assert_outcomes(passed=1, failed=1)


def test_named_budgets_inherit_and_override(pytester):
    budget = "max_size_mb = 1.0\nmin_compression = 2.0\n\n[tool.squeezelab.budget.big]\nmax_size_mb = 10.0\n"
    test = (
        "@pytest.mark.compress_budget(name='big')\n" + _check("size=1_500_000").replace("test_gate", "test_marked")
        + "\n\ndef test_by_argument(compress_budget, base, make):\n"
        "    v = compress_budget.check(base, make(size=1_500_000), name='big')\n"
        "    assert v.budget['min_compression'] == 2.0 and v.budget_name == 'big'\n"
        "\n\ndef test_default(compress_budget, base, make):\n    compress_budget.check(base, make(size=1_500_000))\n"
    )
    _project(pytester, budget, "import pytest\n" + test)
    result = pytester.runpytest("--compress-budget")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*compress budget 'default' broken*", "*size_mb 1.5000 > max 1.0000*"])


@pytest.mark.parametrize(
    ("budget", "words"),
    [
        (
            "max_acuracy_drop = 0.01",
            "unknown budget key 'max_acuracy_drop'; valid keys: max_accuracy_drop (or max_drop), "
            "max_relative_accuracy_drop (or max_relative_drop), max_size_mb, min_compression, min_speedup, "
            "max_latency_ms, require_executable, accuracy_gate, confidence, latency_batch_size, latency_rounds, threads, "
            "max_regression, max_size_growth, min_speedup_ratio.",
        ),
        ("max_size_mb = 'big'", "max_size_mb = 'big' must be a number, not str"),
        ("max_accuracy_drop = -0.01", "max_accuracy_drop = -0.01 must be >= 0"),
        ("min_speedup = 0", "min_speedup = 0 must be > 0"),
        ("require_executable = 1", "require_executable = 1 must be true or false"),
        ("max_accuracy_drop = nan", "max_accuracy_drop = nan must be a finite number"),
        ("confidence = 0.3", "confidence = 0.3 must be >= 0.5"),
        ("confidence = 0", "confidence = 0 no longer means a point comparison; the default accuracy_gate = \"measured\""),
        ("accuracy_gate = 'loose'", "accuracy_gate = 'loose' is not a gate mode; valid modes: 'measured': fail when the "
         "measured drop is over the limit (the default); 'lenient': *; 'strict': *"),
        ("accuracy_gate = 1", "accuracy_gate = 1 is not a gate mode"),
        ("max_size_mb = 1.0\n[tool.squeezelab.budget.default]\nmax_size_mb = 2.0", "'default' is the name of the top-level budget"),
    ],
    ids=["unknown-key", "wrong-type", "negative", "zero-speedup", "not-bool", "nan", "low-confidence", "zero-confidence",
         "unknown-gate-mode", "gate-mode-not-text", "default-subtable"],
)
def test_bad_budgets_are_usage_errors_at_start_up(pytester, budget, words):
    _project(pytester, budget, _check("acc=0.95"))
    result = pytester.runpytest("--compress-budget")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{words}*"])
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


def test_malformed_budget_file(pytester):
    _project(pytester, "max_size_mb = 1.0\n", _check("acc=0.95"))
    pytester.makefile(".toml", broken="max_size_mb = [\n")
    result = pytester.runpytest("--compress-budget=broken.toml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*budget file*broken.toml* is not valid TOML*"])
    assert "Traceback" not in result.stderr.str()


def test_missing_budget_file_and_missing_table(pytester):
    _project(pytester, "max_size_mb = 1.0\n", _check("acc=0.95"))
    result = pytester.runpytest("--compress-budget=nowhere.toml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*budget file*nowhere.toml* not found*"])
    pytester.makepyprojecttoml("[tool.other]\nx = 1\n")
    result = pytester.runpytest("--compress-budget")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*has no [[]tool.squeezelab.budget[]] table*"])


def test_another_budget_file_by_path(pytester):
    _project(pytester, "max_size_mb = 0.1\n", _check("size=3_000_000"))
    pytester.makefile(".toml", team_budget="[budget]\nmax_size_mb = 5.0\n")
    pytester.runpytest("--compress-budget=team_budget.toml").assert_outcomes(passed=1)
    pytester.runpytest("--compress-budget").assert_outcomes(failed=1)


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["in-process", "xdist"])
def test_bad_marker_arguments_fail_the_test_with_a_clear_message(pytester, xdist):
    test = (
        "import pytest\n@pytest.mark.compress_budget(max_size=1)\n" + _check("acc=0.95")
        + "\n\n@pytest.mark.compress_budget(name='nope')\n" + _check("acc=0.95").replace("test_gate", "test_named")
        + "\n\n@pytest.mark.compress_budget(accuracy_gate='exact')\n" + _check("acc=0.95").replace("test_gate", "test_mode")
        + "\n\n" + _check("acc=0.95").replace("test_gate", "test_fine")
    )
    _project(pytester, "max_size_mb = 1.0\n", test)
    result = pytester.runpytest("--compress-budget", *xdist)
    result.assert_outcomes(passed=1, errors=3)
    result.stdout.fnmatch_lines_random(
        [
            "*compress_budget mark can't have 'max_size' keyword argument; valid: name, max_accuracy_drop*",
            "*no budget named 'nope'*defined: default*",
            "*compress_budget mark: accuracy_gate = 'exact' is not a gate mode; valid modes: 'measured'*",
        ]
    )
    assert "Traceback" not in result.stdout.str() and "INTERNALERROR" not in result.stdout.str()


def test_class_and_function_markers_merge_closest_wins(pytester):
    test = (
        "import pytest\n\n@pytest.mark.compress_budget(max_size_mb=0.5, min_compression=8.0)\nclass TestGates:\n"
        "    @pytest.mark.compress_budget(min_compression=2.0)\n"
        "    def test_gate(self, compress_budget, base, make):\n"
        "        v = compress_budget.check(base, make(size=1_000_000))\n"
    )
    _project(pytester, "max_accuracy_drop = 0.01\n", test)
    result = pytester.runpytest("--compress-budget")
    result.assert_outcomes(failed=1)  # the class's max_size_mb=0.5 still applies; its min_compression is overridden
    result.stdout.fnmatch_lines(["*1 of 3 gate(s) failed*", "*size_mb 1.0000 > max 0.5000*"])


@pytest.mark.parametrize(
    ("candidate", "budget", "words"),
    [
        ("ms=0.0", "min_speedup = 1.0", "latency must be positive to gate speed"),
        ("size=0", "min_compression = 2.0", "the candidate's size is 0 bytes"),
        ("acc=None", "max_accuracy_drop = 0.01", "there is no top-1 accuracy to judge"),
    ],
)
def test_degenerate_figures_fail_cleanly(pytester, candidate, budget, words):
    _project(pytester, budget, _check(candidate))
    result = pytester.runpytest("--compress-budget")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*compress budget check could not run: *{words}*"])
    assert "Traceback" not in result.stdout.str()


def test_without_the_flag_gated_tests_are_skipped_with_the_way_to_enable_them(pytester):
    test = (
        "import pytest\n" + _check("acc=0.5")
        + "\n\n@pytest.mark.compress_budget(max_size_mb=1)\ndef test_marked_only():\n    pass\n"
        + "\n\ndef test_plain():\n    pass\n"
    )
    _project(pytester, "max_accuracy_drop = 0.01\n", test)
    result = pytester.runpytest("-rs")
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines(["*compress budget gates are off: run `pytest --compress-budget`*"])


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--compress-budget", "gated"], ""),
        (["gated", "--compress-budget"], ""),  # the flag last
        (["gated"], "--compress-budget"),  # from PYTEST_ADDOPTS
    ],
    ids=["before-path", "last", "addopts"],
)
def test_bare_flag_does_not_swallow_the_test_path(pytester, monkeypatch, args, env):
    _project(pytester, "max_size_mb = 2.0\n", "def test_outside():\n    assert False\n")
    sub = pytester.mkdir("gated")
    (sub / "test_inside.py").write_text(_check("size=1_000_000"))
    monkeypatch.setenv("PYTEST_ADDOPTS", env)
    result = pytester.runpytest(*args)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*budget: *pyproject.toml", "*1 gated check(s)*"])


def test_report_without_the_gates_is_a_usage_error(pytester):
    _project(pytester, "max_size_mb = 2.0\n", _check("size=1_000_000"))
    result = pytester.runpytest("--compress-budget-report=r.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--compress-budget-report needs --compress-budget*"])


def test_summary_json_report_and_junit_properties(pytester):
    test = _check("size=1_000_000") + "\n\n" + _check("size=3_000_000").replace("test_gate", "test_gate_bad")
    _project(pytester, "max_size_mb = 2.0\nmin_compression = 2.0\n", test)
    result = pytester.runpytest("--compress-budget", "--compress-budget-report=out/budget.json", "--junitxml=junit.xml")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*= compress budget =*",
            "*test_gate.py::test_gate *default*size_mb*1.0000*1.0000 <=*2.0000*1.0000  pass",
            "*test_gate.py::test_gate_bad *default*size_mb*3.0000*3.0000 <=*2.0000*-1.0000  FAIL",
            "*2 gated check(s), 4 figure(s): 2 within budget, 2 over*",
        ]
    )
    report = json.loads((pytester.path / "out" / "budget.json").read_text())
    by_test = {c["test"]: c for c in report["checks"]}
    assert by_test["test_gate.py::test_gate"]["passed"] is True
    bad = by_test["test_gate.py::test_gate_bad"]
    assert bad["passed"] is False and {f["name"] for f in bad["figures"]} == {"size_mb", "compression"}
    assert bad["figures"][0]["limit"] == 2.0 and report["budget_source"].endswith("pyproject.toml")
    properties = {
        case.get("name"): {p.get("name"): p.get("value") for p in case.iter("property")}
        for case in ET.parse(pytester.path / "junit.xml").getroot().iter("testcase")
    }
    assert float(properties["test_gate"]["compress_budget.default.size_mb"]) == 1.0
    assert float(properties["test_gate_bad"]["compress_budget.default.size_mb"]) == 3.0
    assert float(properties["test_gate_bad"]["compress_budget.default.compression"]) == pytest.approx(4 / 3)


def test_works_under_xdist(pytester):
    tests = "\n\n".join(_check(f"size={s}").replace("test_gate", f"test_gate_{i}") for i, s in enumerate([1_000_000, 1_500_000, 3_000_000]))
    _project(pytester, "max_size_mb = 2.0\n", tests)
    result = pytester.runpytest("--compress-budget", "-n", "2", "--compress-budget-report=x.json", "--junitxml=j.xml")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*3 gated check(s), 3 figure(s): 2 within budget, 1 over*"])
    assert len(json.loads((pytester.path / "x.json").read_text())["checks"]) == 3
    sizes = sorted(
        float(p.get("value"))
        for p in ET.parse(pytester.path / "j.xml").getroot().iter("property")
        if p.get("name") == "compress_budget.default.size_mb"
    )
    assert sizes == [1.0, 1.5, 3.0]


def test_interval_gates_refuse_metrics_measured_separately(pytester):
    test = "import pytest\n@pytest.mark.compress_budget(accuracy_gate='strict')\n" + _check("acc=0.95")
    _project(pytester, "max_accuracy_drop = 0.01\n", test)
    result = pytester.runpytest("--compress-budget")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*could not run: accuracy_gate = 'strict' judges the confidence interval of the paired drop, and there is none*"]
    )


def test_interval_gates_need_a_metric_with_per_sample_scores(pytester):
    """A callable returning one number can be judged only as measured; one score per sample gets the interval.

    Whether a user's callable returns per-sample scores is known only once it has run, so this one is
    refused after evaluating (timing is skipped: no speed gate is set).
    """
    test = (
        "import numpy as np, pytest, torch\n"
        "def mean_error(p, y):\n    return float(np.mean((p - y) ** 2))\n\n"
        "def closeness(p, y):\n    return -np.mean((p - y) ** 2, axis=1)\n\n"
        "def data():\n"
        "    x = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)\n"
        "    return x, x[:, :2] * 0.5\n\n"
        "def model():\n    torch.manual_seed(0)\n    return torch.nn.Linear(4, 2)\n\n"
        "@pytest.mark.compress_budget(accuracy_gate='lenient')\n"
        "def test_one_number_lenient(compress_budget):\n"
        "    compress_budget.check(model(), model(), data=data(), metric=mean_error)\n\n"
        "def test_one_number_measured(compress_budget):\n"
        "    v = compress_budget.check(model(), model(), data=data(), metric=mean_error)\n"
        "    assert v.figures[0].name == 'mean_error_drop' and 'no interval' in v.figures[0].note\n\n"
        "@pytest.mark.compress_budget(accuracy_gate='strict')\n"
        "def test_per_sample_strict(compress_budget):\n"
        "    v = compress_budget.check(model(), model(), data=data(), metric=closeness)\n"
        "    assert v.figures[0].name == 'closeness_drop' and v.figures[0].method == 't'\n"
    )
    _project(pytester, "max_accuracy_drop = 0.01\n", test)
    result = pytester.runpytest("--compress-budget")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        ["*could not run: accuracy_gate = 'lenient' judges the confidence interval of the paired drop, which needs "
         "per-sample scores; metric 'mean_error' returns one number. Return one score per sample*"]
    )


# --------------------------------------------------------------------------- real models, paired statistics

PAIRED = '''
import numpy as np
import pytest
import torch


class Pick(torch.nn.Module):
    """Logits are features 1..4, negated (a wrong answer) for samples whose index (feature 0) is in [lo, hi)."""

    def __init__(self, lo=0, hi=0):
        super().__init__()
        self.lo, self.hi = lo, hi

    def forward(self, x):
        wrong = ((x[:, :1] >= self.lo) & (x[:, :1] < self.hi)).float()
        return x[:, 1:5] * (1 - 2 * wrong)


def digits(n):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    x[:, 0] = np.arange(n)
    return x, x[:, 1:5].argmax(1)


# 9 of 450 samples lost, none won: a measured drop of 2.0 pp.
@pytest.mark.compress_budget(max_accuracy_drop=0.01, latency_rounds=3)
def test_measured(compress_budget):
    compress_budget.check(Pick(), Pick(0, 9), data=digits(450))


@pytest.mark.compress_budget(max_accuracy_drop=0.01, latency_rounds=3, accuracy_gate="lenient")
def test_lenient(compress_budget):
    compress_budget.check(Pick(), Pick(0, 9), data=digits(450))


# 6 lost and 4 won of 400: a measured drop of 0.5 pp, but the interval reaches 2 pp.
@pytest.mark.compress_budget(max_accuracy_drop=0.01, latency_rounds=3, accuracy_gate="strict")
def test_strict(compress_budget):
    compress_budget.check(Pick(0, 4), Pick(4, 10), data=digits(400))


@pytest.mark.compress_budget(max_accuracy_drop=0.01, latency_rounds=3)
def test_small_drop(compress_budget):
    compress_budget.check(Pick(0, 4), Pick(4, 10), data=digits(400))
'''


def _drop_interval(b: int, c: int, n: int) -> tuple[float, float]:
    """The oracle: scipy's Clopper-Pearson interval on the discordant pairs, widened by the t-interval."""
    import numpy as np
    from scipy.stats import binomtest, ttest_1samp

    ci = binomtest(b, b + c).proportion_ci(confidence_level=0.95, method="exact")
    t = ttest_1samp(np.array([1.0] * b + [-1.0] * c + [0.0] * (n - b - c)), 0.0).confidence_interval(0.95)
    return min((b + c) / n * (2 * ci.low - 1), t.low), max((b + c) / n * (2 * ci.high - 1), t.high)


def test_gate_modes_on_real_paired_measurements(pytester):
    """A measured 2.0 pp drop on 450 samples fails a 1 pp budget by default and passes "lenient";
    "strict" fails a 0.5 pp drop whose interval reaches past 1 pp, which "measured" passes."""
    pytester.makepyprojecttoml("[tool.squeezelab.budget]\nmax_size_mb = 1.0\n")
    pytester.makepyfile(test_gate_paired=PAIRED)
    result = pytester.runpytest("--compress-budget", "--compress-budget-report=r.json", "--junitxml=j.xml")
    result.assert_outcomes(passed=2, failed=2)
    checks = {c["test"].split("::")[1]: c for c in json.loads((pytester.path / "r.json").read_text())["checks"]}
    assert {name: c["passed"] for name, c in checks.items()} == {
        "test_measured": False, "test_lenient": True, "test_strict": False, "test_small_drop": True,
    }
    low, high = _drop_interval(9, 0, 450)
    for name, judged in (("test_measured", 0.02), ("test_lenient", low)):
        drop = checks[name]["figures"][0]
        assert drop["value"] == pytest.approx(0.02) and drop["judged"] == pytest.approx(judged)
        assert (drop["low"], drop["high"]) == pytest.approx((low, high))
        assert drop["method"] == "exact-binomial" and drop["resolved"] is False and drop["samples_needed"] > 450
    assert low < 0.01 < high  # 450 samples cannot resolve a 1 pp budget for this candidate
    strict = checks["test_strict"]["figures"][0]
    low4, high4 = _drop_interval(6, 4, 400)
    assert strict["mode"] == "strict" and strict["value"] == pytest.approx(0.005)
    assert strict["judged"] == pytest.approx(high4) and high4 > 0.01
    needed = checks["test_measured"]["figures"][0]["samples_needed"]
    result.stdout.fnmatch_lines(
        [
            "*compress budget 'default' broken by Pick (fp32 ONNX) (executable) vs Pick (fp32 ONNX)*",
            f"*accuracy_drop 0.0200 > max 0.0100 (over by 0.0100): FAIL, gate 'measured'; 95% CI [[]{low:.4f}, "
            f"{high:.4f}], exact binomial, 9 vs 0 discordant of n=450; the interval contains the limit: this test "
            f"set cannot resolve the budget, about {needed:,} samples would (at the observed disagreement rate)*",
            f"*accuracy_drop 0.0050, interval high end {high4:.4f} > max 0.0100 (over by {high4 - 0.01:.4f}): FAIL, "
            f"gate 'strict'; 95% CI [[]{low4:.4f}, {high4:.4f}], exact binomial, 6 vs 4 discordant of n=400*",
        ]
    )
    # the end-of-run summary: the lenient pass, with its interval and the samples it would take
    result.stdout.fnmatch_lines(
        [
            f"*test_gate_paired.py::test_lenient *accuracy_drop*0.0200*{low:.4f} <=*0.0100*{0.01 - low:.4f}  pass",
            "*candidate Pick (fp32 ONNX) (executable), n=450, metric top-1 accuracy",
            f"*accuracy_drop: 95% CI [[]{low:.4f}, {high:.4f}], exact binomial, 9 vs 0 discordant of n=450; gate "
            f"'lenient'; the interval contains the limit: this test set cannot resolve the budget, about {needed:,} samples*",
            "*4 gated check(s), 8 figure(s): 6 within budget, 2 over; 4 the test set cannot resolve*",
        ]
    )
    properties = {
        case.get("name"): {p.get("name"): p.get("value") for p in case.iter("property")}
        for case in ET.parse(pytester.path / "j.xml").getroot().iter("testcase")
    }
    lenient = properties["test_lenient"]
    assert lenient["compress_budget.default.accuracy_drop.mode"] == "lenient"
    assert lenient["compress_budget.default.accuracy_drop.method"] == "exact-binomial"
    assert float(lenient["compress_budget.default.accuracy_drop.low"]) == pytest.approx(low)
    assert float(lenient["compress_budget.default.accuracy_drop.high"]) == pytest.approx(high)
    assert int(lenient["compress_budget.default.accuracy_drop.samples_needed"]) == needed


# A continuous per-sample metric: dynamic int8 of a small MLP judged by its cosine to the fp32 outputs.
FIDELITY = '''
import numpy as np
import pytest
import torch

import squeezelab as sl


@pytest.mark.compress_budget(max_drop=0.01, latency_rounds=3, accuracy_gate="lenient")
def test_fidelity(compress_budget):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8)).eval()
    x = np.random.default_rng(1).normal(size=(300, 16)).astype(np.float32)
    int8 = sl.compress(model, sl.Recipe(runtime=sl.Int8Dynamic(reduce_range=True)), example_inputs=x[:1])
    verdict = compress_budget.check(model, int8, data=(x, None))
    assert verdict.figures[0].name == "cosine_drop" and verdict.figures[0].method == "t"
'''


@pytest.mark.parametrize(("source", "test"), [(PAIRED, "test_lenient"), (FIDELITY, "test_fidelity")], ids=["top-1", "cosine"])
def test_verdict_is_identical_across_runs(pytester, source, test):
    pytester.makepyprojecttoml("[tool.squeezelab.budget]\nmax_size_mb = 1.0\n")
    pytester.makepyfile(test_gate_paired=source)
    verdicts = set()
    for i in range(5):
        result = pytester.runpytest("--compress-budget", f"--compress-budget-report=r{i}.json", f"test_gate_paired.py::{test}")
        result.assert_outcomes(passed=1)
        (check,) = json.loads((pytester.path / f"r{i}.json").read_text())["checks"]
        verdicts.add(json.dumps([check["passed"], [(f["name"], f["value"], f["judged"], f["low"] if "low" in f else None,
                                                    f["passed"]) for f in check["figures"]]]))
    assert len(verdicts) == 1


# --------------------------------------------------------------------------- settings, names, Points, refusals

SMALL = '''
import numpy as np
import pytest
import torch

import squeezelab as sl
from squeezelab.engine.measurement.paired import measure_pair
from squeezelab.engine.measurement.point import Settings


class Exploding(torch.nn.Module):
    def forward(self, x):
        raise AssertionError("the model ran although the check should have been refused first")


def mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).eval()


def data():
    x = np.random.default_rng(0).normal(size=(120, 8)).astype(np.float32)
    return x, None


def int8(model):
    return sl.compress(model, sl.Recipe(runtime=sl.Int8Dynamic(reduce_range=True)), example_inputs=data()[0][:1])


def test_settings_that_fight_the_budget(compress_budget):
    compress_budget.check(Exploding(), Exploding(), data=data(), settings=Settings(rounds=5))


def test_settings_not_a_settings(compress_budget):
    compress_budget.check(Exploding(), Exploding(), data=data(), settings={"metric": "cosine"})


def test_settings_for_the_rest(compress_budget):
    model = mlp()
    v = compress_budget.check(model, int8(model), data=data(), settings=Settings(metric="kl_to_baseline", eval_batch_size=7))
    assert v.figures[0].name == "neg_kl_drop" and v.metric == "negative KL to fp32"


@pytest.mark.compress_budget(max_relative_drop=0.1, max_drop=None)
def test_relative_drop_of_a_negative_metric(compress_budget):
    compress_budget.check(Exploding(), Exploding(), data=data(), metric="kl_to_baseline")


@pytest.mark.compress_budget(max_drop=0.01, max_accuracy_drop=0.02)
def test_both_names_in_one_marker(compress_budget):
    pass


@pytest.mark.compress_budget(max_accuracy_drop=0.5)
class TestClosestWins:
    @pytest.mark.compress_budget(max_drop=0.001)
    def test_alias_overrides(self, compress_budget):
        assert compress_budget.budget.max_accuracy_drop == 0.001


@pytest.mark.compress_budget(accuracy_gate="strict")
def test_points_measured_together(compress_budget):
    model = mlp()
    pair = measure_pair(model, int8(model), data(), rounds=0)
    v = compress_budget.check(pair.baseline, pair.candidate)
    figure = v.figures[0]
    assert figure.name == "cosine_drop" and figure.method == "t" and figure.value == pair.accuracy_drop
    assert (figure.low, figure.high) == (pair.drop_interval.low, pair.drop_interval.high)


def test_points_measured_apart(compress_budget):
    model = mlp()
    base, cand = sl.measure(model, data(), rounds=0), sl.measure(int8(model), data(), rounds=0, baseline=model)
    v = compress_budget.check(base, cand)
    assert v.figures[0].name == "cosine_drop" and v.figures[0].low is None and "no interval" in v.figures[0].note


def test_points_with_data(compress_budget):
    point = sl.measure(mlp(), data(), rounds=0)
    compress_budget.check(point, point, data=data(), metric="agreement")
'''


def test_settings_aliases_points_and_refusals(pytester):
    pytester.makepyprojecttoml("[tool.squeezelab.budget]\nmax_drop = 0.01\n")
    pytester.makepyfile(test_small=SMALL)
    result = pytester.runpytest("--compress-budget")
    result.assert_outcomes(passed=4, failed=4, errors=1)
    out = result.stdout.str()
    assert "the model ran although" not in out and "Traceback" not in out
    result.stdout.fnmatch_lines_random(
        [
            "*could not run: settings.rounds=5 differs from the budget's latency_rounds = 30; the budget decides how "
            "the gate measures: set latency_rounds in the budget*",
            "*could not run: settings={'metric': 'cosine'}; pass a squeezelab Settings(...)*",
            "*could not run: max_relative_accuracy_drop divides the drop by the baseline's negative KL to fp32, whose "
            "values are <= 0*Gate max_accuracy_drop (absolute, in the metric's units) instead.",
            "*compress_budget mark: max_drop and max_accuracy_drop are two names of one limit*set one of them.",
            "*could not run: data=, metric= given with two Points, which are judged as measured; leave it out*",
        ]
    )


@pytest.mark.parametrize(
    ("budget", "words"),
    [
        ("", "the [[]tool.squeezelab.budget[]] table is empty, so every check would pass whatever it measured"),
        ("confidence = 0.9\nrequire_executable = false\n",
         "table holds only confidence, require_executable, which gate nothing"),
        ("threads = 2\n[tool.squeezelab.budget.encoder]\nlatency_rounds = 5\n", "table holds only threads, which gate nothing"),
    ],
    ids=["empty", "settings-only", "named-settings-only"],
)
def test_a_budget_that_gates_nothing_is_a_usage_error_not_a_silent_pass(pytester, budget, words):
    _project(pytester, budget, _check("acc=0.10"))  # a 0.85 drop: it passed when nothing was gated
    result = pytester.runpytest("--compress-budget")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--compress-budget: *{words}*Add at least one limit: max_accuracy_drop (or max_drop)*"
                                 "require_executable = true*"])
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


def test_a_marker_that_unsets_the_only_limit_fails_the_check_instead_of_passing(pytester):
    test = "@pytest.mark.compress_budget(max_size_mb=None)\n" + _check("size=9_000_000")
    _project(pytester, "max_size_mb = 1.0\n", "import pytest\n\n" + test)
    result = pytester.runpytest("--compress-budget")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*compress budget check could not run: budget 'default' with the marker's overrides "
                                 "{'max_size_mb': None} gates nothing*keep at least one limit*"])


def test_a_report_path_that_cannot_be_written_is_a_usage_error_at_start_up(pytester):
    # It was written when the session ended: a traceback after every gated test had run.
    _project(pytester, "max_size_mb = 2.0\n", _check("size=1_000_000"))
    pytester.makefile(".txt", blocker="a file, not a folder")
    result = pytester.runpytest("--compress-budget", "--compress-budget-report=blocker.txt/r.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--compress-budget-report *r.json' cannot be written: *blocker.txt' is a file, not a folder*"])
    assert "Traceback" not in result.stderr.str() + result.stdout.str()
