"""What ``search`` and each of its strategies return (``SearchResult``: one type), and their trail rows.

A strategy fills in what it found (recipe, model, row, trail, why it stopped, details); ``search`` then adds
what only it knows (the whole search's time, the baseline row, the held-out check) with ``with_context``.

One trail row per evaluation (``_row``): the point's figures, its drop against
the search's fp32 baseline, the move that led to it. The strategies in
``search_strategies`` (and the int8 one in ``int8_search``) all record rows of
this shape, so a result reads the same whatever the objective.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from squeezelab.engine.core.recipe import Recipe
from squeezelab.engine.measurement.point import Point

__all__ = ["SearchResult", "trail_table"]

# The trail's columns in reading order (those a strategy recorded), then the recipe.
_TRAIL_COLUMNS = ("move", "accepted", "label", "{key}", "{key}_drop", "value", "drop", "drop_bound", "size_bytes",
                  "compression", "latency_ms", "speedup")


@dataclass
class SearchResult:
    """What ``search`` found: never empty.

    Attributes:
        recipe: the best recipe within the budget (``Recipe()`` if nothing smaller held).
        model: the model the recipe applies to (the caller's, or a fine-tuned copy).
        row: its measured figures (``value`` and ``drop`` of the metric, also under the metric's
            own name, ``size_bytes``, ``latency_ms``, ...); ``point`` the measured ``Point``.
        trail: a DataFrame of every evaluation, in order, with ``accepted`` and ``drop_bound``.
        stopped: ``"converged"`` (no move left) or ``"time budget"``.
        elapsed_s: wall time of the search (0 until ``search`` sets it).
        baseline: the fp32 baseline's row.
        held_out: the recipe measured on ``validation_data``, when given.
        details: what the strategy chose and why, e.g. ``details["algorithms"]`` for the int8 runtimes
            (the fidelity steps and calibration tried on the probes, the one chosen, why).
    """

    recipe: Recipe
    model: nn.Module
    row: dict[str, Any]
    trail: Any
    stopped: str
    elapsed_s: float = 0.0
    baseline: dict[str, Any] = field(default_factory=dict)
    held_out: dict[str, Any] | None = None
    point: Point | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.point is None:  # a strategy records the Point in its row; the result shows it as well
            self.point = self.row.get("point")

    def with_context(self, **changes: Any) -> SearchResult:
        """A copy with ``changes`` (what ``search`` adds to a strategy's answer: ``elapsed_s``, ``baseline``,
        ``held_out``); this result is left as it is."""
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        r = self.row
        metric = self.point.metric if self.point is not None else "accuracy"
        shown = _figure(self.point, r["value"], r["drop"])
        return (
            f"SearchResult({self.recipe.label}: {metric} {shown}, "
            f"{r['size_bytes']:,} bytes ({r['compression']:.2f}x), {len(self.trail)} evaluations, "
            f"stopped: {self.stopped}, {self.elapsed_s:.1f} s)"
        )


def _figure(point: Point | None, value: float, drop: float) -> str:
    """``97.78 % (drop 0.22 pp)`` for a percentage metric, ``0.9912 (drop 0.0088)`` otherwise: one unit each."""
    if point is not None and not point.percent:
        return f"{value:.4f} (drop {drop:.4f})"
    return f"{value * 100:.2f} % (drop {drop * 100:.2f} pp)"


def _row(point: Point, baseline: Point, move: str) -> dict[str, Any]:
    """One trail row: the point's figures, its drop against the search's baseline, the move."""
    drop = baseline.value - point.value
    row = {**point.to_row(), "value": point.value, "drop": drop, f"{point.metric_key}_drop": drop, "move": move}
    row["compression"] = baseline.size_bytes / point.size_bytes
    row["point"] = point
    return row


def trail_table(rows: list[dict[str, Any]], baseline: Point) -> Any:
    """The trail as a DataFrame: the columns in ``_TRAIL_COLUMNS`` order (those present), then ``recipe``;
    ``attrs`` name the metric so that a reader can label it."""
    import pandas as pd

    key = baseline.metric_key
    columns = [c.format(key=key) for c in _TRAIL_COLUMNS]
    table = pd.DataFrame([{k: v for k, v in row.items() if k != "point"} for row in rows])
    table = table[list(dict.fromkeys(c for c in columns if c in table)) + ["recipe"]]
    table.attrs.update({"metric": baseline.metric, "metric_key": key, "percent": baseline.percent})
    return table
