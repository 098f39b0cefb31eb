"""judge(): the accuracy gate modes, the interval on every accuracy line, the speedup's reading.

Pairs are built by hand from per-sample outcomes whose discordant counts are chosen exactly,
so each verdict can be checked against the interval that produced it (no models, no timing).
"""

from __future__ import annotations

import numpy as np
import pytest

import squeezelab as sl
from squeezelab.checks import Budget, judge
from squeezelab.engine.measurement.paired import PairedMetrics
from squeezelab.engine.measurement.point import Point
from squeezelab.engine.measurement.stats import paired_drop_interval, ratio_interval


def _point(scores: list[float], label: str, ms: float = 1.0, **metric: object) -> Point:
    values = np.asarray(scores, dtype=np.float64)
    return Point(label=label, recipe={}, value=float(values.mean()), scores=values, n_samples=len(values),
                 size_bytes=1000, latency_ms=ms, latency_rounds=30, runtime="onnxruntime", weight_sparsity=0.0,
                 bits=8, executable=True, **metric)


def _pair(b: int, c: int, n: int, *, confidence: float = 0.95, ratios: list[float] | None = None) -> PairedMetrics:
    """Baseline right on all but ``c`` samples; the candidate loses ``b`` of those and wins the ``c``."""
    base = [1] * b + [0] * c + [1] * (n - b - c)
    cand = [0] * b + [1] * c + [1] * (n - b - c)
    iv = paired_drop_interval(base, cand, confidence)
    ratios = ratios or [1.0] * 30
    speed = ratio_interval(ratios, [1.0] * len(ratios))
    return PairedMetrics(baseline=_point(base, "fp32"), candidate=_point(cand, "int8").with_baseline(iv, speed))


COSINE = {"metric": "cosine to fp32", "metric_key": "cosine", "percent": False}


def _cosine_pair(drops: list[float], *, ratios: list[float] | None = None) -> PairedMetrics:
    """Continuous scores: the baseline's cosine to itself is 1; the candidate loses ``drops`` per sample."""
    base = [1.0] * len(drops)
    cand = [1.0 - d for d in drops]
    speed = ratio_interval(ratios or [1.0] * 30, [1.0] * len(ratios or [1.0] * 30))
    iv = paired_drop_interval(base, cand, 0.95)
    return PairedMetrics(baseline=_point(base, "fp32", **COSINE), candidate=_point(cand, "int8", **COSINE).with_baseline(iv, speed))


@pytest.mark.parametrize(
    ("b", "c", "n", "mode", "passed"),
    [
        (9, 0, 450, "measured", False),  # 2.0 pp measured > 1 pp
        (9, 0, 450, "lenient", True),  # ... but the interval reaches below 1 pp
        (9, 0, 450, "strict", False),
        (6, 4, 400, "measured", True),  # 0.5 pp measured
        (6, 4, 400, "lenient", True),
        (6, 4, 400, "strict", False),  # ... but the interval reaches past 1 pp
        (30, 0, 450, "lenient", False),  # 6.7 pp: the whole interval is over the limit
        (0, 0, 450, "strict", True),  # no disagreement at all
    ],
)
def test_gate_modes(b, c, n, mode, passed):
    pair = _pair(b, c, n)
    verdict = judge(pair, Budget(max_accuracy_drop=0.01, accuracy_gate=mode))
    (figure,) = verdict.figures
    iv = pair.drop_interval
    assert figure.passed is passed and verdict.accuracy_gate == mode
    assert figure.judged == {"measured": iv.drop, "lenient": iv.low, "strict": iv.high}[mode]
    assert figure.headroom == pytest.approx(0.01 - figure.judged)
    assert (figure.low, figure.high, figure.method) == (iv.low, iv.high, "exact-binomial")
    assert figure.resolved is (not iv.low <= 0.01 < iv.high)
    line = figure.line()
    assert f"gate {mode!r}" in line and iv.describe() in line and ("pass" if passed else "FAIL") in line


def test_a_drop_over_the_limit_never_passes_the_default_gate():
    for b in range(5, 40):
        pair = _pair(b, 0, 450)
        assert judge(pair, Budget(max_accuracy_drop=0.01)).passed is (b / 450 <= 0.01)


def test_unresolved_budget_says_so_with_the_samples_needed():
    (figure,) = judge(_pair(9, 0, 450), Budget(max_accuracy_drop=0.01)).figures
    assert figure.resolved is False and figure.samples_needed > 450
    assert f"this test set cannot resolve the budget, about {figure.samples_needed:,} samples would" in figure.line()
    assert "cannot resolve" in figure.detail()
    (clear,) = judge(_pair(30, 0, 450), Budget(max_accuracy_drop=0.01)).figures
    assert clear.resolved is True and clear.samples_needed is None and "cannot resolve" not in clear.line()


def test_relative_drop_uses_the_same_interval_scaled():
    pair = _pair(9, 0, 450)
    (figure,) = judge(pair, Budget(max_relative_accuracy_drop=0.01, accuracy_gate="strict")).figures
    scale = 1 / pair.baseline.accuracy
    assert figure.value == pytest.approx(pair.accuracy_drop * scale)
    assert (figure.low, figure.high) == pytest.approx((pair.drop_interval.low * scale, pair.drop_interval.high * scale))
    assert "relative to baseline accuracy 1.0000" in figure.line() and figure.name == "relative_accuracy_drop"


def test_speedup_is_judged_on_its_median_and_shows_its_interval_and_reading():
    slower = _pair(0, 0, 100, ratios=[0.78 + 0.001 * i for i in range(30)])
    verdict = judge(slower, Budget(min_speedup=0.6))
    (figure,) = verdict.figures
    assert figure.passed and figure.value == slower.speedup and figure.reading == "slower"
    assert "95% interval 0.7890-0.8000: slower" in figure.note
    assert figure.detail() == "speedup: 0.79x (0.79-0.80), 95% interval of the median of 30 rounds: slower"
    failed = judge(slower, Budget(min_speedup=1.5)).failure_message()
    assert "speedup 0.7945 < min 1.5000 (over by 0.7055, median of 30 interleaved rounds, batch 1; 95% interval" in failed
    noisy = _pair(0, 0, 100, ratios=[0.8, 1.2] * 15)
    (figure,) = judge(noisy, Budget(min_speedup=0.5)).figures
    assert figure.reading == "about the same" and "slower" not in figure.line() and "faster" not in figure.line()


@pytest.mark.parametrize(
    ("pair", "budget", "words"),
    [
        (_pair(9, 0, 450, confidence=0.9), Budget(max_accuracy_drop=0.01), "interval is at confidence 0.9 but the budget asks for 0.95"),
        (_pair(0, 450, 450), Budget(max_relative_accuracy_drop=0.01), "the baseline's accuracy is 0.0: a drop relative to it is undefined"),
    ],
)
def test_figures_that_cannot_be_judged_are_refused(pair, budget, words):
    with pytest.raises(sl.errors.DataError) as info:
        judge(pair, budget)
    assert words in str(info.value)


def test_budget_modes_are_validated():
    with pytest.raises(sl.SqueezeError, match=r"accuracy_gate = 'exact' is not a gate mode; valid modes: 'measured'"):
        Budget(accuracy_gate="exact")
    assert Budget().accuracy_gate == "measured" and Budget().confidence == 0.95


# --------------------------------------------------------------------------- every per-sample metric, named


def _drops(n: int, mean: float, spread: float, seed: int = 0) -> list[float]:
    return list(np.random.default_rng(seed).normal(mean, spread, size=n))


def test_a_cosine_drop_is_named_cosine_with_its_t_interval_and_no_accuracy_or_pp():
    from scipy.stats import ttest_1samp

    drops = _drops(200, 0.003, 0.002)
    pair = _cosine_pair(drops)
    verdict = judge(pair, Budget(max_accuracy_drop=0.002))
    (figure,) = verdict.figures
    oracle = ttest_1samp(np.array(drops), 0.0).confidence_interval(0.95)  # scipy's t-interval of the differences
    assert figure.name == "cosine_drop" and figure.metric == "cosine to fp32" and figure.method == "t"
    assert figure.value == pytest.approx(np.mean(drops)) and not figure.passed
    assert (figure.low, figure.high) == pytest.approx((oracle.low, oracle.high))
    assert (verdict.metric, verdict.metric_key, verdict.percent) == ("cosine to fp32", "cosine", False)
    message = verdict.failure_message()
    assert f"cosine_drop {np.mean(drops):.4f} > max 0.0020 (over by {np.mean(drops) - 0.002:.4f}): FAIL" in message
    assert "t on paired differences, n=200" in message and "(metric: cosine to fp32, n=200)" in message
    assert "accuracy" not in message.replace("accuracy_gate", "") and "pp" not in message


def test_a_cosine_drop_the_samples_cannot_resolve_says_how_many_would():
    (figure,) = judge(_cosine_pair(_drops(50, 0.002, 0.004)), Budget(max_accuracy_drop=0.002)).figures
    assert figure.resolved is False and figure.samples_needed > 50
    assert f"about {figure.samples_needed:,} samples would (at the observed spread of the differences)" in figure.line()


def test_relative_cosine_drop_is_named_and_scaled_by_the_baseline_value():
    pair = _cosine_pair(_drops(100, 0.01, 0.001))
    (figure,) = judge(pair, Budget(max_relative_accuracy_drop=0.02)).figures
    assert figure.name == "relative_cosine_drop" and figure.passed
    assert "relative to baseline cosine 1.0000" in figure.line()


def test_small_drops_are_shown_with_significant_digits_not_as_zero():
    pair = _cosine_pair([3e-5] * 10 + [2e-5] * 10)
    (figure,) = judge(pair, Budget(max_accuracy_drop=1e-6)).figures
    assert figure.line().startswith("cosine_drop 2.5e-05 > max 1e-06 (over by 2.4e-05): FAIL")


def test_a_relative_drop_of_a_non_positive_metric_is_refused():
    neg_mse = {"metric": "negative MSE", "metric_key": "neg_mse", "percent": False}
    base, cand = _point([-0.5, -0.5], "fp32", **neg_mse), _point([-0.6, -0.6], "int8", **neg_mse)
    with pytest.raises(sl.errors.DataError, match=r"the baseline's neg_mse is -0.5: a drop relative to it is undefined"):
        judge(PairedMetrics(baseline=base, candidate=cand), Budget(max_relative_accuracy_drop=0.1))


def test_two_metrics_are_not_one_drop():
    base, cand = _point([1.0, 1.0], "fp32", **COSINE), _point([1.0, 0.0], "int8")
    with pytest.raises(sl.errors.DataError, match=r"baseline was measured with 'cosine to fp32' and the candidate with 'top-1 accuracy'"):
        judge(PairedMetrics(baseline=base, candidate=cand), Budget(max_accuracy_drop=0.1))


def test_max_drop_is_the_metric_neutral_name_of_max_accuracy_drop_and_both_are_refused():
    assert Budget().replace(max_drop=0.002).max_accuracy_drop == 0.002
    assert Budget().replace(max_relative_drop=0.01).max_relative_accuracy_drop == 0.01
    with pytest.raises(sl.SqueezeError, match=r"max_drop and max_accuracy_drop are two names of one limit.*set one of them"):
        Budget().replace("budget.toml", max_drop=0.002, max_accuracy_drop=0.01)


def test_budget_numbers_may_be_numpy_and_are_stored_plain():
    from squeezelab.checks.budget import BudgetError

    made = Budget(max_size_mb=np.float32(2.5), latency_rounds=np.int64(10), confidence=np.array(0.9))
    assert made == Budget(max_size_mb=2.5, latency_rounds=10, confidence=0.9)
    assert type(made.max_size_mb) is float and type(made.latency_rounds) is int
    assert made.replace("test", max_drop=np.float64(0.01)).max_accuracy_drop == 0.01
    with pytest.raises(BudgetError, match=r"latency_rounds = 10.0 must be an integer, not float"):
        Budget(latency_rounds=10.0)
    with pytest.raises(BudgetError, match=r"max_size_mb = -1 must be > 0"):
        Budget(max_size_mb=-1)
