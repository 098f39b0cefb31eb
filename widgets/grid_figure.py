"""The report's grid explorer: the metric against sparsity (a line per bit width) and size, with two sliders.

Plotly's own ``layout.sliders`` drive it, so the saved page needs no kernel and no
script of its own: the ``bits`` slider toggles ``visible`` of the per-width
``selected_line`` and ``selected_point`` traces; the ``sparsity`` slider restyles the
``x``, ``y`` and ``text`` of every ``selected_point`` trace. Traces carry
``meta = {"role", "panel", "bits"}``.

What keeps it readable: each bit width has its own colour, dash and marker, and its
markers are set a little to the side of the swept sparsity (``DODGE``), so widths with
equal figures do not hide one another (hover text gives the exact values); the sparsity
axis has a tick at each swept value and ends just past the last one; the size axis is
logarithmic with ticks named 10k, 20k, 50k.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from squeezelab.widgets._axes import grid_axis, log_axis
from squeezelab.widgets._labels import MetricLabels

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

__all__ = ["explore_figure", "has_grid", "DODGE"]

DODGE = 0.012  # sideways offset between neighbouring bit widths, as a fraction of the sparsity range
_COLOURS = ["#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]
_DASHES = ["solid", "dash", "dot", "dashdot", "longdash", "longdashdot"]
_SYMBOLS = ["circle", "square", "diamond", "triangle-up", "cross", "x", "star", "hexagon"]


def _hover(row: Any, labels: MetricLabels) -> str:
    return (
        f"<b>{html.escape(str(row['label']))}</b><br>"
        f"{html.escape(labels.figure(row['value'], row.get('drop')))}<br>"
        f"sparsity asked {float(row['sparsity']):.0%}<br>"
        f"size {float(row['size_bytes']):,.0f} B (compression {float(row['compression']):.2f}×)<br>"
        f"{html.escape(str(row['kind']))}"
    )


def _grid_rows(table: pd.DataFrame) -> pd.DataFrame:
    rows = table.reset_index(drop=True)
    return rows[~rows["is_baseline"].astype(bool) & rows["value"].notna()]


def has_grid(table: pd.DataFrame) -> bool:
    """Whether ``table`` holds a grid worth exploring: at least two swept sparsities.

    A list of recipes at one sparsity (the demo's ten) has no grid: one point per width
    would hide every other recipe of that width.
    """
    return len({float(s) for s in _grid_rows(table)["sparsity"]}) > 1


class _Grid:
    """The grid's cells ``(bits, sparsity) -> row``, its axes' values and the first selection."""

    def __init__(self, table: pd.DataFrame, current: int | None) -> None:
        self.rows = table.reset_index(drop=True)
        self.grid = _grid_rows(table)
        self.bits = sorted({int(b) for b in self.grid["bits"]}, reverse=True)
        self.sparsities = sorted({float(s) for s in self.grid["sparsity"]})
        self.cell: dict[tuple[int, float], Any] = {}
        for _, row in self.grid.iterrows():  # grid points come first in a sweep table: they win over extra recipes
            self.cell.setdefault((int(row["bits"]), float(row["sparsity"])), row)
        self.b0 = self.bits[0] if self.bits else None
        self.s0 = self.sparsities[0] if self.sparsities else None
        if current is not None and current in self.grid.index:
            self.b0, self.s0 = int(self.rows.at[current, "bits"]), float(self.rows.at[current, "sparsity"])
        span = (max(self.sparsities) - min(self.sparsities)) if self.sparsities else 0.0
        self.step = DODGE * max(span, 0.1)

    def offset(self, bits: int) -> float:
        """Sideways offset of a width's markers, centred on the swept sparsity."""
        i = self.bits.index(bits)
        return (i - (len(self.bits) - 1) / 2) * self.step

    def point(self, bits: int, sparsity: float | None, column: str, labels: MetricLabels) -> tuple[list, list, list]:
        row = self.cell.get((bits, sparsity)) if sparsity is not None else None
        if row is None:
            return [], [], []
        x = float(row[column]) + (self.offset(bits) if column == "sparsity" else 0.0)
        return [x], [float(row["value"])], [_hover(row, labels)]


def _add_width_lines(fig: Any, g: _Grid, labels: MetricLabels) -> None:
    import plotly.graph_objects as go

    for i, b in enumerate(g.bits):
        points = [g.cell[(b, s)] for s in g.sparsities if (b, s) in g.cell]
        fig.add_trace(
            go.Scatter(
                x=[float(r["sparsity"]) + g.offset(b) for r in points], y=[float(r["value"]) for r in points],
                text=[_hover(r, labels) for r in points], hovertemplate="%{text}<extra></extra>",
                mode="lines+markers", name=f"{b} bits", legendgroup=f"{b}",
                line=dict(color=_COLOURS[i % len(_COLOURS)], width=2, dash=_DASHES[i % len(_DASHES)]),
                marker=dict(size=8, symbol=_SYMBOLS[i % len(_SYMBOLS)]),
                meta={"role": "grid", "panel": "sparsity", "bits": b},
            ),
            row=1, col=1,
        )
    fig.add_trace(
        go.Scatter(
            x=g.grid["size_bytes"].astype(float).tolist(), y=g.grid["value"].astype(float).tolist(),
            text=[_hover(r, labels) for _, r in g.grid.iterrows()], hovertemplate="%{text}<extra></extra>",
            mode="markers", name="all points", marker=dict(color="#bdbdbd", size=7),
            meta={"role": "all", "panel": "size"},
        ),
        row=1, col=2,
    )


def _add_baseline(fig: Any, g: _Grid, labels: MetricLabels) -> None:
    import plotly.graph_objects as go

    base = g.rows[g.rows["is_baseline"].astype(bool)]
    if not len(base):
        return
    b = base.iloc[0]
    span = [min(g.sparsities, default=0.0) - 2 * g.step, max(g.sparsities, default=0.0) + 2 * g.step]
    fig.add_trace(
        go.Scatter(
            x=span, y=[float(b["value"])] * 2, mode="lines", name="fp32 baseline",
            line=dict(color="#7f7f7f", dash="dash"), hovertemplate=f"{_hover(b, labels)}<extra></extra>",
            meta={"role": "baseline", "panel": "sparsity"},
        ),
        row=1, col=1,
    )
    fig.add_trace(
        go.Scatter(
            x=[float(b["size_bytes"])], y=[float(b["value"])], text=[_hover(b, labels)],
            hovertemplate="%{text}<extra></extra>", mode="markers", showlegend=False, name="fp32 baseline",
            marker=dict(symbol="star", size=14, color="#7f7f7f"), meta={"role": "baseline", "panel": "size"},
        ),
        row=1, col=2,
    )


def _add_selection(fig: Any, g: _Grid, labels: MetricLabels) -> tuple[list[int], list[tuple[int, int, str]]]:
    """The highlighted line and points of each width; returns (every selected_* trace, the selected_point ones)."""
    import plotly.graph_objects as go

    selected: list[int] = []
    points: list[tuple[int, int, str]] = []  # (trace index, bits, column)
    for b in g.bits:
        line = fig.data[g.bits.index(b)]
        fig.add_trace(
            go.Scatter(
                x=line.x, y=line.y, text=line.text, hovertemplate="%{text}<extra></extra>", mode="lines+markers",
                name="selected bits", showlegend=False, visible=b == g.b0,
                line=dict(color="#d62728", width=4), marker=dict(size=8, color="#d62728"),
                meta={"role": "selected_line", "panel": "sparsity", "bits": b},
            ),
            row=1, col=1,
        )
        selected.append(len(fig.data) - 1)
        for col, (panel, column) in enumerate((("sparsity", "sparsity"), ("size", "size_bytes")), start=1):
            x, y, text = g.point(b, g.s0, column, labels)
            fig.add_trace(
                go.Scatter(
                    x=x, y=y, text=text, hovertemplate="%{text}<extra></extra>", mode="markers",
                    name="selected point", showlegend=False, visible=b == g.b0,
                    marker=dict(symbol="circle-open", size=20, color="#d62728", line=dict(width=3)),
                    meta={"role": "selected_point", "panel": panel, "bits": b},
                ),
                row=1, col=col,
            )
            selected.append(len(fig.data) - 1)
            points.append((len(fig.data) - 1, b, column))
    return selected, points


def _sliders(fig: Any, g: _Grid, labels: MetricLabels, selected: list[int], points: list[tuple[int, int, str]]) -> list[dict]:
    bits_steps = []
    for b in g.bits:
        visible = [fig.data[i].meta["bits"] == b for i in selected]
        bits_steps.append(dict(method="restyle", label=f"{b}", value=f"{b}", args=[{"visible": visible}, selected]))
    sparsity_steps = []
    for s in g.sparsities:
        xs, ys, texts = zip(*(g.point(b, s, column, labels) for _, b, column in points)) if points else ((), (), ())
        sparsity_steps.append(
            dict(
                method="restyle", label=f"{s:.0%}", value=f"{s}",
                args=[{"x": list(xs), "y": list(ys), "text": list(texts)}, [i for i, _, _ in points]],
            )
        )
    sliders = []
    common = dict(len=0.44, y=-0.18, yanchor="top", pad=dict(t=10))
    if bits_steps:
        sliders.append(dict(name="bits", active=g.bits.index(g.b0), steps=bits_steps, x=0.0,
                            currentvalue=dict(prefix="bits: ", font=dict(size=13)), **common))
    if sparsity_steps:
        sliders.append(dict(name="sparsity", active=g.sparsities.index(g.s0), steps=sparsity_steps, x=0.56,
                            currentvalue=dict(prefix="sparsity: ", font=dict(size=13)), **common))
    return sliders


def explore_figure(table: pd.DataFrame, *, current: int | None = None) -> go.Figure:
    """The metric against sparsity (one line per bit width) and against size, with two sliders.

    Args:
        table: a sweep table (DataFrame, baseline first).
        current: row position to select first (a grid row), or None.
    """
    from plotly.subplots import make_subplots

    labels = MetricLabels.of(table)
    g = _Grid(table, current)
    name = html.escape(labels.name)
    fig = make_subplots(
        rows=1, cols=2, horizontal_spacing=0.1,
        subplot_titles=[f"{name} vs sparsity, per bit width", f"{name} vs size"],
    )
    _add_width_lines(fig, g, labels)
    _add_baseline(fig, g, labels)
    selected, points = _add_selection(fig, g, labels)
    fig.update_xaxes(title_text="sparsity asked (markers of each width set slightly apart)", **grid_axis(g.sparsities), row=1, col=1)
    sizes = [*g.grid["size_bytes"], *g.rows.loc[g.rows["is_baseline"].astype(bool), "size_bytes"]]
    fig.update_xaxes(title_text="size (bytes, log scale)", **log_axis(sizes), row=1, col=2)
    fig.update_yaxes(title_text=name, tickformat=labels.tickformat)
    fig.update_layout(
        sliders=_sliders(fig, g, labels, selected, points), height=560, template="plotly_white",
        margin=dict(l=60, r=20, t=60, b=40), legend=dict(orientation="h", yanchor="bottom", y=1.08, x=0),
    )
    return fig
