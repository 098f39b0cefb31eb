"""Pareto frontiers of measured tables, and the table type sweeps and searches return.

A point is on the frontier when no other point is at least as good on both
axes and strictly better on one: smaller ``x`` (bytes, milliseconds) and
larger ``y`` (accuracy). Rows with a missing value on either axis are left out.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from squeezelab.engine.core.arguments import finite_number
from squeezelab.engine.core.errors import ConfigError
from squeezelab.engine.explore.evaluation import recipe_of

__all__ = ["pareto_front", "SweepTable"]

_MINIMISE = ("size_bytes", "latency_ms", "drop", "accuracy_drop", "bits", "seconds")


def pareto_front(table: Any, x: str = "size_bytes", y: str = "accuracy", *, minimize_x: bool = True, maximize_y: bool = True) -> Any:
    """The rows of ``table`` (a DataFrame) on the Pareto frontier of ``x`` against ``y``, sorted by ``x``.

    Examples:
        >>> import pandas as pd
        >>> t = pd.DataFrame({"size_bytes": [10, 20, 30, 25], "accuracy": [0.5, 0.9, 0.95, 0.8]})
        >>> pareto_front(t).index.tolist()
        [0, 1, 2]
    """
    for column in (x, y):
        if column not in table.columns:
            raise ConfigError(f"no column {column!r} in the table; columns: {', '.join(map(str, table.columns))}.")
    valid = table[table[x].notna() & table[y].notna()]
    xs = valid[x].to_numpy(dtype=float) * (1 if minimize_x else -1)
    ys = valid[y].to_numpy(dtype=float) * (1 if maximize_y else -1)
    keep = []
    for i in range(len(valid)):
        no_worse = (xs <= xs[i]) & (ys >= ys[i])
        better = (xs < xs[i]) | (ys > ys[i])
        keep.append(not np.any(no_worse & better))
    front = valid[np.array(keep, dtype=bool)] if len(valid) else valid
    return front.sort_values([x, y], ascending=[minimize_x, not maximize_y], kind="stable")


class SweepTable:
    """A measured table (``.table``, a pandas DataFrame) with the baseline as its first row.

    One row per ``Point`` (``Point.to_row()``): ``label``, ``kind``, ``executable``, ``bits``,
    ``sparsity`` (asked), ``weight_sparsity`` (measured zeros), ``value`` (the metric's figure)
    and ``drop`` (baseline minus it, paired by sample, with ``drop_low`` / ``drop_high``, its
    interval, and ``drop_method``), the same two under the metric's own name (``accuracy`` /
    ``accuracy_drop`` for top-1, ``cosine`` / ``cosine_drop``, ...), ``size_bytes``,
    ``compression``, ``latency_ms`` (median) with ``latency_p25_ms`` / ``latency_p75_ms`` (the middle
    half of the timed rounds), ``speedup`` with ``speedup_low`` / ``speedup_high`` and
    ``speed_reading``, ``quantized_weight_fraction``, ``cached`` and ``recipe`` (JSON).
    ``table.attrs`` names the metric: ``metric`` (its name), ``metric_key`` (its column) and
    ``percent`` (shown in % and pp); ``left_out`` (label -> why, when a default grid left points out)
    and ``calibration`` (where static int8 rows were calibrated) when they apply. ``points`` holds the
    ``Point`` objects themselves; ``left_out`` the reasons (``engine.explore.grid.NotApplicable``, with
    the fix in API and command-line words).
    """

    def __init__(self, table: Any, *, points: list[Any] | None = None, hits: int = 0, misses: int = 0,
                 complete: bool = True, left_out: list[Any] | None = None, calibration: str | None = None) -> None:
        self.table = table
        self.points = list(points or [])
        self.hits = hits
        self.misses = misses
        self.complete = complete
        self.left_out = list(left_out or [])
        if self.left_out:
            table.attrs["left_out"] = {reason.label: reason.message for reason in self.left_out}
        if calibration is not None:
            table.attrs["calibration"] = calibration

    @classmethod
    def from_points(cls, points: list[Any], extra: list[dict[str, Any]] | None = None, **kwargs: Any) -> Any:
        """The table of measured points (the first is the baseline), with the relative columns."""
        import pandas as pd

        rows = [{**p.to_row(), **(extra[i] if extra else {})} for i, p in enumerate(points)]
        table = pd.DataFrame(rows)
        if len(table):
            base = points[0]
            table.insert(0, "is_baseline", [True] + [False] * (len(table) - 1))
            table.loc[0, ["drop", f"{base.metric_key}_drop"]] = 0.0  # the baseline against itself
            if "drop" not in table or table["drop"].isna().any():  # scalar-only metrics: the plain difference
                plain = base.value - table["value"] if base.value is not None else np.nan
                table["drop"] = table["drop"].fillna(plain) if "drop" in table else plain
                table[f"{base.metric_key}_drop"] = table["drop"]
            table["compression"] = base.size_bytes / table["size_bytes"]
            for column in ("speedup", "speedup_low", "speedup_high"):
                table.loc[0, column] = 1.0
            table.attrs.update({"metric": base.metric, "metric_key": base.metric_key, "percent": bool(base.percent)})
            order = [
                "is_baseline", "label", "kind", "executable", "bits", "sparsity", "weight_sparsity", "value", "drop",
                base.metric_key, f"{base.metric_key}_drop", "drop_low", "drop_high", "size_bytes", "compression",
                "latency_ms", "latency_p25_ms", "latency_p75_ms", "speedup", "speedup_low", "speedup_high",
                "speed_reading",
            ]
            order = list(dict.fromkeys(order))
            table = table[[c for c in order if c in table] + sorted(c for c in table if c not in order)]
        return cls(table, points=points, **kwargs)

    @property
    def metric(self) -> str:
        """The name of the metric every figure of this table is measured in."""
        return self.table.attrs.get("metric", "top-1 accuracy")

    @property
    def metric_key(self) -> str:
        return self.table.attrs.get("metric_key", "accuracy")

    @property
    def baseline(self) -> Any:
        """The fp32 baseline row."""
        return self.table.iloc[0]

    def pareto(self, x: str = "size_bytes", y: str = "value", *, executable_only: bool = False) -> Any:
        """Frontier rows: smallest ``x`` (``"size_bytes"`` or ``"latency_ms"``) for the largest ``y``.

        ``y`` defaults to the metric's value (any column works, e.g. ``"accuracy"``).
        ``executable_only=True`` leaves simulated rows out (what can ship today).
        """
        table = self.table[self.table["executable"]] if executable_only else self.table
        return pareto_front(table, x, y, minimize_x=x in _MINIMISE, maximize_y=y not in _MINIMISE)

    def best(self, *, max_accuracy_drop: float, objective: str = "size", executable_only: bool = False) -> Any:
        """The row with the smallest size (or latency) whose drop of the metric is within ``max_accuracy_drop``.

        ``max_accuracy_drop`` is a finite number >= 0 (0.01 = 1 point); NaN or inf raise ``ConfigError``.
        """
        max_accuracy_drop = finite_number("max_accuracy_drop", max_accuracy_drop, low=0, hint=" (0.01 = 1 point)")
        column = {"size": "size_bytes", "latency": "latency_ms"}.get(objective)
        if column is None:
            raise ConfigError(f"objective={objective!r}; use 'size' or 'latency'.")
        within = self.table[(self.table["drop"] <= max_accuracy_drop + 1e-12) & self.table[column].notna()]
        table = within[within["executable"].astype(bool)] if executable_only else within
        if table.empty:
            simulated = within["label"].tolist() if executable_only else []
            also = (f"; {len(simulated)} simulated row(s) would ({', '.join(simulated[:3])}): executable_only=False "
                    "lets the rule choose them, though they are not files to ship") if simulated else ""
            raise ConfigError(
                f"no row has a {self.metric} drop within {max_accuracy_drop} and a measured {column}"
                + (" among executable rows" if executable_only else "") + f"{also}; loosen the budget or sweep more points."
            )
        return table.sort_values([column, "value"], ascending=[True, False], kind="stable").iloc[0]

    def recipe(self, row: int | Any) -> Any:
        """The ``Recipe`` of a row (by position, or a row of ``table``)."""

        return recipe_of(self.table.iloc[row] if isinstance(row, (int, np.integer)) else row)

    def __len__(self) -> int:
        return len(self.table)

    def summary(self) -> Any:
        """The table's main columns, for reading."""
        key = self.metric_key
        columns = ["label", "kind", key, f"{key}_drop", "size_bytes", "compression", "latency_ms", "speedup"]
        return self.table[[c for c in columns if c in self.table]]

    def __repr__(self) -> str:
        state = "" if self.complete else ", INCOMPLETE"
        notes = "".join(f"\nleft out of the default grid: {reason.message}" for reason in self.left_out)
        if "calibration" in self.table.attrs:
            notes += f"\n{self.table.attrs['calibration']}"
        return (
            f"{type(self).__name__}({len(self.table)} rows, {self.hits} from cache, {self.misses} measured{state})\n"
            f"{self.summary().to_string(index=False)}{notes}"
        )

    def _repr_html_(self) -> str:
        return self.summary()._repr_html_()  # type: ignore[no-any-return]
