"""How the widgets name and format a table's metric: "cosine to fp32 0.9912 (drop 0.0088)", not "accuracy".

Every figure a widget draws is read from a table (a sweep's, or a layer
sensitivity table) whose ``attrs`` name the metric: ``metric`` (its name),
``metric_key`` (its column) and ``percent`` (shown in % and pp). A
``MetricLabels`` turns those three into titles and formatted numbers, with the
engine's own ``Metric.format_value`` / ``format_drop`` so a figure reads the
same in a widget, a report and a gate message.

A table without ``attrs`` (built by hand, or by older code) is read as top-1
accuracy when it has an ``accuracy`` column, the only metric older tables held.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from squeezelab.engine.measurement.scoring import METRICS, Metric

__all__ = ["MetricLabels"]


def _display_only(outputs: Any, reference: Any) -> Any:
    raise TypeError("this Metric only formats figures read from a table; it cannot score outputs")


@dataclass(frozen=True)
class MetricLabels:
    """A metric's name, table column and unit, for titles, hover text and table cells.

    Attributes:
        name: the metric's name (``"top-1 accuracy"``, ``"cosine to fp32"``).
        key: its table column (``"accuracy"``, ``"cosine"``).
        percent: values in % and drops in percentage points; otherwise plain numbers.

    Examples:
        >>> labels = MetricLabels("cosine to fp32", "cosine", False)
        >>> labels.figure(0.99121, 0.00879)
        'cosine to fp32 0.9912 (drop 0.0088)'
        >>> MetricLabels("top-1 accuracy", "accuracy", True).figure(0.98, 0.0123)
        'top-1 accuracy 98.00 % (drop 1.23 pp)'
    """

    name: str
    key: str
    percent: bool

    @classmethod
    def of(cls, table: Any) -> MetricLabels:
        """The labels of a table (its ``attrs``), a ``Sweep``, a ``Point`` or a ``Metric``."""
        if isinstance(table, Metric):
            return cls(table.name, table.key, bool(table.percent))
        if hasattr(table, "metric_key") and hasattr(table, "percent") and isinstance(getattr(table, "metric", None), str):
            return cls(table.metric, table.metric_key, bool(table.percent))  # a Point
        table = getattr(table, "table", table)  # a Sweep: its DataFrame carries the attrs
        attrs = dict(getattr(table, "attrs", {}) or {})
        if "metric" in attrs:
            key = str(attrs.get("metric_key", "value"))
            return cls(str(attrs["metric"]), key, bool(attrs.get("percent", False)))
        return cls("top-1 accuracy", "accuracy", True)

    @property
    def metric(self) -> Metric:
        """A built-in metric of this name, or a display-only ``Metric`` with these labels."""
        for metric in METRICS.values():
            if (metric.name, metric.key, metric.percent) == (self.name, self.key, self.percent):
                return metric
        return Metric(_display_only, name=self.name, key=self.key, percent=self.percent)

    def value(self, value: Any) -> str:
        """``"98.00 %"`` or ``"0.9912"``; ``"n/a"`` when missing."""
        return self.metric.format_value(_number(value))

    def drop(self, drop: Any) -> str:
        """``"1.23 pp"`` or ``"0.0088"``; ``"n/a"`` when missing."""
        return self.metric.format_drop(_number(drop))

    def figure(self, value: Any, drop: Any = None) -> str:
        """``"<name> <value> (drop <drop>)"``; without a drop, ``"<name> <value>"``."""
        text = f"{self.name} {self.value(value)}"
        return text if _number(drop) is None else f"{text} (drop {self.drop(drop)})"

    @property
    def drop_unit(self) -> str:
        """The unit of a drop, for axis and colour-bar titles: ``"pp"``, or the metric's own name."""
        return "pp" if self.percent else self.name

    @property
    def drop_title(self) -> str:
        """``"drop (pp)"`` for percent metrics, ``"drop of cosine to fp32"`` otherwise."""
        return "drop (pp)" if self.percent else f"drop of {self.name}"

    @property
    def drop_scale(self) -> float:
        """Multiply a drop by this to draw it in ``drop_unit`` (100 for pp)."""
        return 100.0 if self.percent else 1.0

    @property
    def tickformat(self) -> str:
        """Plotly tick format of the metric's axis (``""``: Plotly's default)."""
        return ".1%" if self.percent else ""


def _number(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return None if v != v else v
