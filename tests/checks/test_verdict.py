"""judge(): the accuracy gate modes, the interval on every accuracy line, the speedup's reading.

Pairs are built by hand from per-sample outcomes whose discordant counts are chosen exactly,
so each verdict can be checked against the interval that produced it (no models, no timing).
"""

from __future__ import annotations

import pytest

import squeezelab as sl
from squeezelab.checks import Budget, judge
from squeezelab.engine.metrics import Metrics
from squeezelab.engine.paired import PairedMetrics
from squeezelab.engine.stats import paired_drop_interval, ratio_interval


def _metrics(accuracy: float, label: str, ms: float = 1.0) -> Metrics:
    return Metrics(label=label, accuracy=accuracy, metric="top1_accuracy", n_samples=0, size_bytes=1000,
                   latency_ms=ms, latency_batch_size=1, latency_repeats=30, threads=1, runtime="onnxruntime",
                   sparsity=0.0, bits=8, executable=True)


def _pair(b: int, c: int, n: int, *, confidence: float = 0.95, ratios: list[float] | None = None) -> PairedMetrics:
    """Baseline right on all but ``c`` samples; the candidate loses ``b`` of those and wins the ``c``."""
    base = [1] * b + [0] * c + [1] * (n - b - c)
    cand = [0] * b + [1] * c + [1] * (n - b - c)
    iv = paired_drop_interval(base, cand, confidence)
    ratios = ratios or [1.0] * 30
    speed = ratio_interval(ratios, [1.0] * len(ratios))
    return PairedMetrics(
        baseline=_metrics(sum(base) / n, "fp32"), candidate=_metrics(sum(cand) / n, "int8"), n_samples=n,
        accuracy_drop=iv.drop, drop_interval=iv, discordant=iv.discordant, speedup=speed.median,
        speedup_interval=speed, latency_rounds=len(ratios),
    )


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
    assert "relative to baseline accuracy 1.0000" in figure.line()


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
    with pytest.raises(sl.DataError) as info:
        judge(pair, budget)
    assert words in str(info.value)


def test_budget_modes_are_validated():
    with pytest.raises(sl.SqueezeError, match=r"accuracy_gate = 'exact' is not a gate mode; valid modes: 'measured'"):
        Budget(accuracy_gate="exact")
    assert Budget().accuracy_gate == "measured" and Budget().confidence == 0.95
