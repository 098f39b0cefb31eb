"""The statistics behind every gate and table: paired accuracy drops and speed ratios.

One home for them, so a figure means the same thing wherever it is shown:

- ``paired_drop_interval(base_scores, cand_scores, confidence)``: the drop
  ``mean(base - cand)`` of per-sample scores (higher is better) with a
  confidence interval, paired sample by sample.
- ``samples_to_resolve(interval, limit)``: how many samples an interval with
  the same observed rates would need to exclude ``limit``.
- ``ratio_interval(numerators, denominators)``: the median of per-round ratios
  (a speedup) with a distribution-free interval and a plain reading.

Words used the same way everywhere: the *interval* ``[low, high]`` is
two-sided at ``confidence`` (each end misses with probability at most
``(1 - confidence) / 2``); a *bound* is one end of a one-sided interval
(``sided="upper"`` or ``"lower"``: the end misses with probability at most
``1 - confidence``).

Examples:
    >>> iv = paired_drop_interval([1] * 450, [1] * 441 + [0] * 9, 0.95)
    >>> iv.method, iv.discordant, round(iv.drop, 4)
    ('exact-binomial', (9, 0), 0.02)
    >>> str(ratio_interval([2.0] * 30, [1.0] * 30))
    '2.00x (2.00-2.00)'
    >>> ratio_interval([2.0] * 30, [1.0] * 30).reading
    'faster'
    >>> str(ratio_interval([2.0] * 5, [1.0] * 5))
    '2.00x (too few rounds (5) for a verdict: use rounds>=6)'
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from squeezelab.engine.core.errors import ConfigError, DataError

__all__ = [
    "DropInterval",
    "RatioInterval",
    "paired_drop_interval",
    "samples_to_resolve",
    "ratio_interval",
    "speed_reading",
    "min_rounds",
    "speedup_text",
    "check_confidence",
]

SIDES = ("two", "upper", "lower")


@dataclass(frozen=True)
class DropInterval:
    """A paired drop ``mean(base - cand)`` with its confidence interval.

    Attributes:
        drop: the measured drop (negative: the candidate scores higher).
        low, high: the interval (``-inf`` / ``inf`` on the open side of a one-sided bound).
        confidence: its confidence level, in (0, 1).
        method: ``"exact-binomial"`` for 0/1 scores, ``"t"`` for continuous scores.
        n: number of paired samples.
        discordant: ``(b, c)`` for 0/1 scores: samples the baseline gets right and the
            candidate wrong, and the reverse; ``None`` for continuous scores.
        std: standard deviation of the per-sample differences (``ddof=1``); ``None`` when n < 2.
        sided: ``"two"`` (an interval), ``"upper"`` or ``"lower"`` (a bound).
    """

    drop: float
    low: float
    high: float
    confidence: float
    method: str
    n: int
    discordant: tuple[int, int] | None
    std: float | None
    sided: str = "two"

    def contains(self, limit: float) -> bool:
        """True when the data cannot tell whether the drop is above or below ``limit``.

        That is ``low <= limit < high``: exactly when the gate modes disagree ("lenient"
        passes, "strict" fails), so the test set does not resolve the budget.
        """
        return self.low <= limit < self.high

    def describe(self, scale: float = 1.0) -> str:
        """``95% CI [-0.0022, 0.0089], exact binomial, 6 vs 2 discordant of n=450``.

        ``scale`` multiplies the ends (e.g. ``1 / baseline accuracy`` for a relative drop).
        """
        pct = f"{self.confidence * 100:g}%"
        low, high = self.low * scale, self.high * scale
        if self.sided == "two":
            head = f"{pct} CI [{_f4(low)}, {_f4(high)}]"
        else:
            head = f"{pct} {self.sided} bound {_f4(high if self.sided == 'upper' else low)}"
        if self.method == "exact-binomial":
            b, c = self.discordant or (0, 0)
            return f"{head}, exact binomial, {b} vs {c} discordant of n={self.n}"
        return f"{head}, t on paired differences, n={self.n}"


def _f4(x: float) -> str:
    return f"{x:.4f}" if math.isfinite(x) else ("-inf" if x < 0 else "inf")


def check_confidence(confidence: float, sided: str = "two") -> None:
    """Raise ``ConfigError`` unless ``confidence`` is in (0, 1) and ``sided`` is a known side."""
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise ConfigError(f"confidence={confidence!r} must be a number in (0, 1), e.g. 0.95.")
    if sided not in SIDES:
        raise ConfigError(f"sided={sided!r}; use 'two' (an interval), 'upper' or 'lower' (a one-sided bound).")


def _scores(values: Any, what: str) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(a)):
        raise DataError(f"{what} holds NaN or Inf; per-sample scores must be finite numbers.")
    return a


def _tails(confidence: float, sided: str) -> tuple[float, float]:
    """Miss probabilities below the low end and above the high end (0 for an open side)."""
    alpha = 1.0 - confidence
    return {"two": (alpha / 2, alpha / 2), "upper": (0.0, alpha), "lower": (alpha, 0.0)}[sided]


def _clopper_pearson(k: float, m: float, tail_low: float, tail_high: float) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a binomial proportion ``k / m``; real ``k``, ``m`` allowed."""
    from scipy.stats import beta

    low = 0.0 if k <= 0 or tail_low <= 0 else float(beta.ppf(tail_low, k, m - k + 1))
    high = 1.0 if k >= m or tail_high <= 0 else float(beta.ppf(1 - tail_high, k + 1, m - k))
    return low, high


def _exact_discordant(b: float, c: float, n: float, tail_low: float, tail_high: float) -> tuple[float, float]:
    """The drop interval from the exact interval of ``b / (b + c)``, given the ``b + c`` discordant pairs.

    Conditional on ``m = b + c`` the drop is ``(m / n)(2p - 1)`` with ``b ~ Binomial(m, p)``;
    ``m = 0`` gives the degenerate answer ``[0, 0]``.
    """
    m = b + c
    if m <= 0:
        return 0.0, 0.0
    p_low, p_high = _clopper_pearson(b, m, tail_low, tail_high)
    return m / n * (2 * p_low - 1), m / n * (2 * p_high - 1)


def _t_interval(drop: float, std: float, n: float, tail_low: float, tail_high: float) -> tuple[float, float]:
    from scipy.stats import t

    se = std / math.sqrt(n)
    low = drop - float(t.ppf(1 - tail_low, n - 1)) * se if tail_low else -math.inf
    high = drop + float(t.ppf(1 - tail_high, n - 1)) * se if tail_high else math.inf
    return low, high


def _ends(drop: float, std: float | None, n: float, discordant: tuple[float, float] | None, tails: tuple[float, float]) -> tuple[float, float]:
    found = []
    if std is not None and n >= 2:
        found.append(_t_interval(drop, std, n, *tails))
    if discordant is not None:
        found.append(_exact_discordant(*discordant, n, *tails))
    # The exact interval is exact given how many pairs disagree; the t-interval also carries
    # the uncertainty of that number (a few losses and no wins), so each end is the wider one.
    # Nothing to go on (one sample of a continuous score) leaves the interval open.
    low = min((f[0] for f in found), default=-math.inf) if tails[0] else -math.inf
    high = max((f[1] for f in found), default=math.inf) if tails[1] else math.inf
    return low, high


def paired_drop_interval(
    base_scores: Sequence[float] | np.ndarray,
    cand_scores: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    *,
    sided: str = "two",
) -> DropInterval:
    """The paired drop ``mean(base - cand)`` of per-sample scores with its confidence interval.

    For 0/1 scores (top-1 correctness; decided from the values, not from a metric's
    name) the interval is exact: the Clopper-Pearson interval of ``b / (b + c)`` on
    the discordant pairs (``b`` = baseline right and candidate wrong, ``c`` = the
    reverse) mapped to the drop as ``(m / n)(2p - 1)`` with ``m = b + c``. That one
    is exact *given* ``m``; where the t-interval on the paired differences is wider
    (it also accounts for how many pairs disagree: a few losses and no wins), its end
    is used. No discordant pair gives the degenerate ``[0, 0]``. Continuous scores get
    the t-interval on the paired differences.

    Args:
        base_scores, cand_scores: per-sample scores of baseline and candidate, same samples, same order.
        confidence: in (0, 1).
        sided: ``"two"``: an interval; ``"upper"`` / ``"lower"``: a one-sided bound
            (``high`` / ``low``), the other end infinite.

    Raises:
        DataError: scores of different lengths, empty, or not finite.
        ConfigError: ``confidence`` outside (0, 1) or an unknown ``sided``.
    """
    check_confidence(confidence, sided)
    base, cand = _scores(base_scores, "base_scores"), _scores(cand_scores, "cand_scores")
    if base.shape != cand.shape or base.size == 0:
        raise DataError(
            f"paired scores need the same samples on both sides: got {base.size} baseline and "
            f"{cand.size} candidate scores; evaluate both models on the same data."
        )
    d = base - cand  # (n,)
    n = int(d.size)
    std = float(d.std(ddof=1)) if n > 1 else None
    binary = bool(np.all((base == 0) | (base == 1)) and np.all((cand == 0) | (cand == 1)))
    discordant = (int((d > 0).sum()), int((d < 0).sum())) if binary else None
    drop = float(d.mean())
    low, high = _ends(drop, std, n, discordant, _tails(confidence, sided))
    if binary:  # a widened t-end can pass the range a drop of 0/1 scores can take (one-sided ends stay open)
        low = low if math.isinf(low) else max(low, -1.0)
        high = high if math.isinf(high) else min(high, 1.0)
    method = "exact-binomial" if binary else "t"
    return DropInterval(drop, low, high, float(confidence), method, n, discordant, std, sided)


def _rescaled(interval: DropInterval, n: float) -> DropInterval:
    """The interval ``interval`` would have from ``n`` samples with the same observed rates."""
    discordant = None
    if interval.discordant is not None:
        b, c = interval.discordant
        discordant = (b * n / interval.n, c * n / interval.n)
    tails = _tails(interval.confidence, interval.sided)
    low, high = _ends(interval.drop, interval.std, n, discordant, tails)
    return replace(interval, low=low, high=high)


def samples_to_resolve(interval: DropInterval, limit: float, *, max_samples: int = 10**9) -> int | None:
    """How many samples would let ``interval`` tell whether the drop is above or below ``limit``.

    The rule: keep the observed rates (discordant pairs per sample, or the spread of the
    paired differences) and the measured drop, grow the number of samples, and return the
    smallest count whose interval excludes ``limit`` (so every gate mode agrees).
    Returns ``interval.n`` when it already does, and ``None`` when no count would: the
    measured drop equals the limit, there is no spread to scale (one sample of a
    continuous score), or more than ``max_samples`` would be needed.
    """
    if not interval.contains(limit):
        return interval.n
    if interval.drop == limit or (interval.discordant is None and interval.std is None):
        return None

    def resolved(n: int) -> bool:
        return not _rescaled(interval, n).contains(limit)

    high = interval.n
    while not resolved(high):
        if high >= max_samples:
            return None
        high = min(2 * high, max_samples)
    low = max(high // 2, interval.n)  # unresolved at `low` (or it is the observed n)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if resolved(mid) else (mid, high)
    return high


# --------------------------------------------------------------------------- speed ratios


def min_rounds(confidence: float = 0.95) -> int:
    """The fewest paired rounds whose median has a two-sided ``confidence`` interval (6 at 95%).

    Examples:
        >>> min_rounds(0.95), min_rounds(0.9), min_rounds(0.99)
        (6, 5, 8)
    """
    check_confidence(confidence, "two")
    rounds = 1
    while _median_rank(rounds, confidence) == 0:
        rounds += 1
    return rounds


def speed_reading(low: float, high: float, *, rounds: int | None = None, confidence: float = 0.95) -> str:
    """What a speedup's interval says: ``"faster"`` when all of it is above 1.0, ``"slower"`` when all of it
    is below, ``"about the same"`` when it holds 1.0.

    Without an interval (``high`` infinite: too few rounds) there is no verdict, and the reading says
    so instead of "about the same" (``rounds`` adds the count and the fix).
    """
    if not math.isfinite(high):
        if rounds is None:
            return "too few rounds for a verdict"
        return f"too few rounds ({rounds}) for a verdict: use rounds>={min_rounds(confidence)}"
    if low > 1.0:
        return "faster"
    if high < 1.0:
        return "slower"
    return "about the same"


def number_text(value: Any, spec: str, suffix: str = "") -> str:
    """``format(value, spec) + suffix`` for a table cell; ``n/a`` for a missing, non-numeric or NaN value."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if math.isnan(v) else format(v, spec) + suffix


def speedup_text(median: float | None, low: float | None, high: float | None, times: str = "x") -> str:
    """``0.82x (0.78-0.85) slower`` for a table cell; ``n/a`` without a median, no reading without an interval."""
    if median is None or not math.isfinite(median):
        return "n/a"
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return f"{median:.2f}{times} (no interval)"
    if not math.isfinite(high):
        return f"{median:.2f}{times} ({speed_reading(low, high)})"
    return f"{median:.2f}{times} ({low:.2f}-{high:.2f}) {speed_reading(low, high)}"


def row_speedup_text(row: Any, times: str = "x") -> str:
    """``speedup_text`` of a sweep-table row (``speedup``, ``speedup_low``, ``speedup_high``); the baseline says so."""
    if bool(row.get("is_baseline", False)):
        return f"1.00{times} (the baseline)"

    def number(column: str) -> float | None:
        try:
            return float(row.get(column))
        except (TypeError, ValueError):
            return None

    return speedup_text(number("speedup"), number("speedup_low"), number("speedup_high"), times)


@dataclass(frozen=True)
class RatioInterval:
    """The median of per-round ratios (e.g. baseline / candidate latency = speedup) and its interval.

    Attributes:
        median: median of the per-round ratios.
        low, high: distribution-free interval of that median at ``confidence`` (order
            statistics); ``0`` and ``inf`` when the rounds are too few for one.
        rounds: number of paired rounds.
        confidence: the interval's confidence level.
    """

    median: float
    low: float
    high: float
    rounds: int
    confidence: float = 0.95

    @property
    def reading(self) -> str:
        """``"faster"``, ``"slower"``, ``"about the same"`` (the interval includes 1.0), or, without an
        interval, ``"too few rounds (5) for a verdict: use rounds>=6"``."""
        return speed_reading(self.low, self.high, rounds=self.rounds, confidence=self.confidence)

    def __str__(self) -> str:
        if not math.isfinite(self.high):
            return f"{self.median:.2f}x ({self.reading})"
        return f"{self.median:.2f}x ({self.low:.2f}-{self.high:.2f})"


def _median_rank(rounds: int, confidence: float) -> int:
    """The largest ``k`` with ``P(Binomial(rounds, 1/2) <= k - 1) <= (1 - confidence) / 2``; 0 if none."""
    tail = (1 - confidence) / 2
    cumulative, k = 0.0, 0
    while k < rounds:
        cumulative += math.comb(rounds, k) / 2**rounds  # P(X = k)
        if cumulative > tail:
            break
        k += 1
    return k


def ratio_interval(numerators: Sequence[float], denominators: Sequence[float], confidence: float = 0.95) -> RatioInterval:
    """Median of per-round ratios ``numerators[i] / denominators[i]`` with its confidence interval.

    The interval is the classic distribution-free one for a median: the ``k``-th smallest
    and ``k``-th largest ratio, ``k`` chosen from the Binomial(rounds, 1/2) distribution so
    that it covers the true median with probability at least ``confidence`` (for 30
    rounds at 95%: the 10th and 21st). Fewer than ``min_rounds(confidence)`` rounds (6 at 95%) give
    no interval: ``low`` 0, ``high`` inf, and a reading that says there is no verdict.

    Raises:
        DataError: sequences of different lengths, or no rounds.
        ConfigError: ``confidence`` outside (0, 1).
    """
    check_confidence(confidence, "two")
    if len(numerators) != len(denominators) or not numerators:
        raise DataError(
            f"ratio_interval needs paired rounds: got {len(numerators)} numerators and "
            f"{len(denominators)} denominators; time both sides in the same rounds."
        )
    ratios = sorted(a / b for a, b in zip(numerators, denominators, strict=True))
    rounds = len(ratios)
    k = _median_rank(rounds, confidence)
    low, high = (ratios[k - 1], ratios[rounds - k]) if k else (0.0, math.inf)
    return RatioInterval(float(statistics.median(ratios)), float(low), float(high), rounds, float(confidence))
