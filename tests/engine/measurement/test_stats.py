"""engine/measurement/stats.py: paired drop intervals, samples to resolve a budget, speed-ratio intervals.

Oracles: scipy's Clopper-Pearson interval (``binomtest(...).proportion_ci(method="exact")``)
and one-sample t-interval (``ttest_1samp(...).confidence_interval``), exact binomial sums,
and the textbook ranks of a median's confidence interval.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom, binomtest, ttest_1samp

import squeezelab as sl
from squeezelab.engine.measurement.stats import (
    _rescaled,
    paired_drop_interval,
    ratio_interval,
    samples_to_resolve,
    min_rounds,
    speed_reading,
    speedup_text,
)


def outcomes(b: int, c: int, n: int, *, both_wrong: int = 0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample correctness with exactly ``b`` (baseline right, candidate wrong) and ``c`` (the reverse)."""
    base = np.array([1] * b + [0] * c + [0] * both_wrong + [1] * (n - b - c - both_wrong))
    cand = np.array([0] * b + [1] * c + [0] * both_wrong + [1] * (n - b - c - both_wrong))
    order = np.random.default_rng(seed).permutation(n)
    return base[order], cand[order]


def oracle(b: int, c: int, n: int, confidence: float) -> tuple[tuple[float, float], tuple[float, float]]:
    """(Clopper-Pearson mapped to the drop, t-interval of the paired differences), both from scipy."""
    m = b + c
    ci = binomtest(b, m).proportion_ci(confidence_level=confidence, method="exact")
    exact = (m / n * (2 * ci.low - 1), m / n * (2 * ci.high - 1))
    base, cand = outcomes(b, c, n)
    t = ttest_1samp(base - cand, 0.0).confidence_interval(confidence)
    return exact, (t.low, t.high)


@pytest.mark.parametrize(("b", "c", "n"), [(6, 2, 450), (9, 0, 450), (1, 3, 50), (2, 2, 400), (30, 12, 1000)])
@pytest.mark.parametrize("confidence", [0.9, 0.95])
def test_binary_interval_is_the_clopper_pearson_mapping_widened_by_the_t_interval(b, c, n, confidence):
    base, cand = outcomes(b, c, n)
    iv = paired_drop_interval(base, cand, confidence)
    exact, t = oracle(b, c, n, confidence)
    assert iv.method == "exact-binomial" and iv.discordant == (b, c) and iv.n == n
    assert iv.drop == pytest.approx((b - c) / n)
    assert iv.low == pytest.approx(min(exact[0], t[0]), abs=1e-12)
    assert iv.high == pytest.approx(max(exact[1], t[1]), abs=1e-12)
    assert iv.low <= iv.drop <= iv.high


def test_the_exact_end_is_the_one_used_where_few_samples_disagree():
    # 6 vs 2 discordant of 450: the exact low end is wider than the normal-theory one.
    exact, t = oracle(6, 2, 450, 0.95)
    iv = paired_drop_interval(*outcomes(6, 2, 450), 0.95)
    assert exact[0] < t[0] and iv.low == pytest.approx(exact[0])
    assert iv.describe() == "95% CI [-0.0054, 0.0212], exact binomial, 6 vs 2 discordant of n=450"


def test_a_drop_of_binary_scores_stays_within_its_range():
    # 199 of 200 lost, 1 won: the t-end alone passes 1.0 (measured: 1.0049 on EfficientNet-Lite0 at 4 bits).
    base, cand = np.ones(200), np.zeros(200)
    cand[0] = 1.0
    _, t = oracle(199, 0, 200, 0.95)
    iv = paired_drop_interval(base, cand, 0.95)
    assert t[1] > 1.0 and iv.high == 1.0 and iv.low < iv.drop < iv.high
    mirrored = paired_drop_interval(cand, base, 0.95)
    assert mirrored.low == -1.0 and mirrored.high > mirrored.drop


def test_no_discordant_pair_gives_the_degenerate_exact_answer():
    iv = paired_drop_interval([1, 0, 1, 1], [True, False, True, True], 0.95)
    assert (iv.drop, iv.low, iv.high, iv.discordant, iv.method) == (0.0, 0.0, 0.0, (0, 0), "exact-binomial")


def test_pairing_not_order_decides_and_booleans_count_as_binary():
    a = paired_drop_interval(*outcomes(5, 1, 200, both_wrong=7, seed=1))
    b = paired_drop_interval(*(x.astype(bool) for x in outcomes(5, 1, 200, both_wrong=7, seed=2)))
    assert a.discordant == b.discordant == (5, 1) and b.method == "exact-binomial"
    assert (a.low, a.high) == pytest.approx((b.low, b.high), abs=1e-12)


def test_continuous_scores_get_the_t_interval(rng):
    base = rng.uniform(0.8, 1.0, size=300)
    cand = base - rng.normal(0.01, 0.02, size=300)
    iv = paired_drop_interval(base, cand, 0.95)
    t = ttest_1samp(base - cand, 0.0).confidence_interval(0.95)
    assert iv.method == "t" and iv.discordant is None
    assert (iv.low, iv.high) == pytest.approx((t.low, t.high), abs=1e-12)
    assert iv.describe().endswith("t on paired differences, n=300")


def test_one_sided_bounds(rng):
    base, cand = outcomes(6, 2, 450)
    up = paired_drop_interval(base, cand, 0.9, sided="upper")
    ci = binomtest(6, 8).proportion_ci(confidence_level=0.8, method="exact")  # one-sided 90% each end
    t = ttest_1samp(base - cand, 0.0, alternative="less").confidence_interval(0.9)
    assert up.low == -math.inf and up.high == pytest.approx(max(8 / 450 * (2 * ci.high - 1), t.high))
    low = paired_drop_interval(base, cand, 0.9, sided="lower")
    assert low.high == math.inf and low.low < low.drop < up.high
    two = paired_drop_interval(base, cand, 0.8)
    assert (low.low, up.high) == pytest.approx((two.low, two.high))  # 80% two-sided = two 90% bounds


@pytest.mark.parametrize("m", range(1, 13))
def test_coverage_given_the_discordant_count_is_at_least_nominal(m):
    """For every split probability p, P(interval covers (m/n)(2p - 1)) >= 95%, summed exactly over b."""
    n, confidence = 400, 0.95
    intervals = [paired_drop_interval(*outcomes(b, m - b, n), confidence) for b in range(m + 1)]
    for p in np.linspace(0.0, 1.0, 41):
        true = m / n * (2 * p - 1)
        covered = sum(binom.pmf(b, m, p) for b, iv in enumerate(intervals) if iv.low - 1e-12 <= true <= iv.high + 1e-12)
        assert covered >= confidence - 1e-9, (m, p, covered)


def test_coverage_when_all_disagreements_go_one_way():
    """A candidate that loses ~2% of samples and wins none (n=450): the number of losses varies too.

    The exact interval alone, which takes that number as known, covered the true drop in
    about half of such draws; with the t-interval's ends it stays near 95%.
    """
    rng = np.random.default_rng(0)
    n, true, draws = 450, 0.02, 400
    covered = 0
    for _ in range(draws):
        b = int(rng.binomial(n, true))
        iv = paired_drop_interval(*outcomes(b, 0, n), 0.95)
        covered += iv.low <= true <= iv.high
    assert covered / draws >= 0.90


@pytest.mark.parametrize(
    ("base", "cand", "kwargs", "error", "words"),
    [
        ([1, 0, 1], [1, 0], {}, sl.errors.DataError, "same samples on both sides: got 3 baseline and 2 candidate"),
        ([], [], {}, sl.errors.DataError, "got 0 baseline"),
        ([1.0, float("nan")], [1.0, 1.0], {}, sl.errors.DataError, "base_scores holds NaN or Inf"),
        ([1, 0], [1, 0], {"confidence": 1.0}, sl.errors.ConfigError, "confidence=1.0 must be a number in (0, 1)"),
        ([1, 0], [1, 0], {"sided": "left"}, sl.errors.ConfigError, "sided='left'; use 'two'"),
    ],
)
def test_bad_input_is_refused_clearly(base, cand, kwargs, error, words):
    with pytest.raises(error) as info:
        paired_drop_interval(base, cand, **kwargs)
    assert words in str(info.value)


def test_samples_to_resolve_is_the_smallest_count_that_excludes_the_limit():
    iv = paired_drop_interval(*outcomes(9, 0, 450), 0.95)  # 2.0 pp measured, 1 pp limit
    assert iv.contains(0.01)
    needed = samples_to_resolve(iv, 0.01)
    assert needed > 450
    assert not _rescaled(iv, needed).contains(0.01) and _rescaled(iv, needed - 1).contains(0.01)
    assert samples_to_resolve(iv, 0.015) > needed  # a limit closer to the drop needs more
    assert samples_to_resolve(iv, 0.001) == 450  # already resolved: the interval is above it


def test_samples_to_resolve_has_no_answer_on_the_limit_or_without_spread():
    iv = paired_drop_interval(*outcomes(9, 0, 450), 0.95)
    assert samples_to_resolve(iv, iv.drop) is None
    single = paired_drop_interval([0.9], [0.8])  # one continuous sample: no spread to scale
    assert single.low == -math.inf and single.high == math.inf and samples_to_resolve(single, 0.05) is None


def test_ratio_interval_uses_the_textbook_ranks_of_the_median():
    rng = np.random.default_rng(3)
    ratios = rng.uniform(0.5, 1.5, size=30)
    r = ratio_interval(list(ratios), [1.0] * 30, 0.95)
    ranked = np.sort(ratios)
    assert r.median == pytest.approx(np.median(ratios))
    assert (r.low, r.high) == pytest.approx((ranked[9], ranked[20]))  # the 10th and 21st of 30
    assert 1 - 2 * binom.cdf(9, 30, 0.5) >= 0.95 > 1 - 2 * binom.cdf(10, 30, 0.5)
    assert r.rounds == 30 and str(r) == f"{r.median:.2f}x ({r.low:.2f}-{r.high:.2f})"


def test_ratio_interval_reading():
    straddles = ratio_interval([1.1, 0.9] * 15, [1.0] * 30)
    assert straddles.reading == "about the same" and straddles.low < 1 < straddles.high
    assert ratio_interval([1.1 + 0.01 * i for i in range(30)], [1.0] * 30).reading == "faster"
    assert ratio_interval([0.7 + 0.01 * i for i in range(30)], [1.0] * 30).reading == "slower"
    mostly_slower = ratio_interval([0.8] * 20 + [1.2] * 10, [1.0] * 30)  # median 0.8, interval reaches 1.2
    assert mostly_slower.median == 0.8 and mostly_slower.reading == "about the same"
    few = ratio_interval([2.0, 2.1, 2.2], [1.0, 1.0, 1.0])
    # no interval is no verdict: never "about the same", whatever the median
    assert few.high == math.inf and few.reading == "too few rounds (3) for a verdict: use rounds>=6"
    assert str(few) == "2.10x (too few rounds (3) for a verdict: use rounds>=6)"
    five = ratio_interval([2.06] * 5, [1.0] * 5)
    assert five.reading == "too few rounds (5) for a verdict: use rounds>=6"
    six = ratio_interval([2.06] * 6, [1.0] * 6)  # the fewest rounds the reading asks for do give a verdict
    assert math.isfinite(six.high) and six.reading == "faster"
    assert ratio_interval([2.0] * 4, [1.0] * 4, confidence=0.9).reading.endswith("use rounds>=5")
    assert [min_rounds(c) for c in (0.9, 0.95, 0.99)] == [5, 6, 8]
    assert all(math.isinf(ratio_interval([1.0] * (min_rounds(c) - 1), [1.0] * (min_rounds(c) - 1), c).high)
               for c in (0.9, 0.95, 0.99))
    assert speed_reading(0.0, math.inf) == "too few rounds for a verdict"
    assert speed_reading(1.0, 1.3) == "about the same" and speed_reading(0.7, 1.0) == "about the same"


def test_speedup_text():
    assert speedup_text(0.82, 0.78, 0.85) == "0.82x (0.78-0.85) slower"
    assert speedup_text(0.82, 0.78, 1.02, "×") == "0.82× (0.78-1.02) about the same"
    assert speedup_text(0.82, None, None) == "0.82x (no interval)" and speedup_text(None, None, None) == "n/a"
    assert speedup_text(2.06, 0.0, math.inf) == "2.06x (too few rounds for a verdict)"


def test_ratio_interval_refuses_unpaired_rounds():
    with pytest.raises(sl.errors.DataError, match="got 3 numerators and 2 denominators"):
        ratio_interval([1.0, 1.0, 1.0], [1.0, 1.0])
