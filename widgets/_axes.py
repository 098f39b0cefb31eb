"""Axis ticks a reader can read: ``1k 2k 5k 10k 20k`` on a log axis, the swept values on a grid axis.

Plotly labels a log axis that spans less than a decade or two with bare mantissas
("2 3 4 ... 9 100k"): no 10k, no 20k. ``log_ticks`` chooses the ticks itself, on the
1-2-5 series (or powers of ten for wide ranges, every integer mantissa for narrow ones),
and names them with SI suffixes.

Examples:
    >>> short_number(20_000), short_number(1_500_000), short_number(0.25), short_number(750)
    ('20k', '1.5M', '0.25', '750')
    >>> log_ticks([12_395, 155_008])[1]
    ['10k', '20k', '50k', '100k', '200k']
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["short_number", "log_ticks", "log_axis", "grid_axis"]

_SERIES = ((1, 2, 5), (1,), (1, 2, 3, 4, 5, 6, 7, 8, 9))
_PAD = 0.03  # decades of margin beyond the end ticks, so a point on an end tick is not cut in half


def short_number(x: float) -> str:
    """``x`` with an SI suffix (k, M, G) and no trailing zeros: 1000 -> '1k', 1.5e6 -> '1.5M'."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{suffix}"
    return f"{x:.3g}"


def _series_ticks(low: float, high: float, mantissas: Sequence[int]) -> list[float]:
    """The ticks ``m * 10^k`` from the largest one <= ``low`` to the smallest one >= ``high``."""
    values = [m * 10.0**e for e in range(math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 2) for m in mantissas]
    values.sort()
    start = max(i for i, v in enumerate(values) if v <= low * (1 + 1e-9))
    stop = min(i for i, v in enumerate(values) if v >= high * (1 - 1e-9))
    return values[start : stop + 1]


def log_ticks(values: Iterable[Any]) -> tuple[list[float], list[str], list[float]] | None:
    """``(tickvals, ticktext, range)`` for a log axis over ``values`` (positive, finite); None if there are none.

    The axis runs from the tick just below the smallest value to the tick just above the largest
    (``range`` in decades, as Plotly's log axes take it, with a little margin). The 1-2-5 series
    is used when it gives 3 to 8 ticks; wider ranges take powers of ten, narrower ones every
    integer mantissa.
    """
    numbers = [float(v) for v in values if v is not None and _positive(v)]
    if not numbers:
        return None
    low, high = min(numbers), max(numbers)
    ticks = _series_ticks(low, high, _SERIES[0])
    if len(ticks) > 8:
        ticks = _series_ticks(low, high, _SERIES[1])
    elif len(ticks) < 3:
        ticks = _series_ticks(low, high, _SERIES[2])
    span = [math.log10(ticks[0]) - _PAD, math.log10(ticks[-1]) + _PAD]
    return ticks, [short_number(t) for t in ticks], span


def _positive(value: Any) -> bool:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return False
    return math.isfinite(v) and v > 0


def log_axis(values: Iterable[Any]) -> dict[str, Any]:
    """Plotly axis settings (``type``, ``tickvals``, ``ticktext``, ``range``) for a log axis over ``values``."""
    ticks = log_ticks(values)
    if ticks is None:
        return {"type": "log"}
    tickvals, ticktext, span = ticks
    return {"type": "log", "tickmode": "array", "tickvals": tickvals, "ticktext": ticktext, "range": span}


def grid_axis(values: Sequence[float], fmt: str = "{:.0%}") -> dict[str, Any]:
    """Ticks at exactly the swept ``values`` and a range that ends just past them (a grid stopping at 75 % ends there)."""
    if not values:
        return {}
    low, high = min(values), max(values)
    pad = 0.05 * max(high - low, 0.1)
    return {
        "tickmode": "array",
        "tickvals": list(values),
        "ticktext": [fmt.format(v) for v in values],
        "range": [low - pad, high + pad],
    }
