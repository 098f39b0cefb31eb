"""A layer's weight histogram with the values its weights can take after quantization as vertical lines.

The classic picture of a linear grid wasting levels on empty tails against k-means centroids
that follow the distribution (Han et al. 2016, Fig. 4); the levels come from
``squeezelab.widgets.levels.quantization_levels``.

``weight_histogram`` takes ``figure=None`` (build a new ``plotly.graph_objects.Figure``) or an
existing figure or ``FigureWidget`` to update in place, inside one ``batch_update``. Its traces
have ``meta["role"]`` ``"weights"`` (the bars) and ``"levels"`` (the lines); ``layer_figure`` holds
them as the right panel. Layer names and method labels are HTML-escaped before they reach Plotly,
which renders titles and legends as HTML.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import numpy as np

from squeezelab.widgets._figure_parts import axis_key, batch, set_panel_title, trace_with_role
from squeezelab.widgets.levels import QuantizationLevels

if TYPE_CHECKING:
    import plotly.graph_objects as go
    import torch

__all__ = ["weight_histogram", "histogram_traces", "update_histogram", "MAX_DRAWN_LEVELS"]

# More lines than this would paint the panel solid (16-bit grids have 65,535): they are counted, not drawn.
MAX_DRAWN_LEVELS = 256
_BINS = 80


def _as_numpy(weight: Any) -> np.ndarray:
    if hasattr(weight, "detach"):
        weight = weight.detach().to("cpu").float().numpy()
    return np.asarray(weight, dtype=np.float64)


def histogram_traces() -> list[Any]:
    """Empty bar (``"weights"``) and line (``"levels"``) traces (``update_histogram`` fills them)."""
    import plotly.graph_objects as go

    return [
        go.Bar(
            x=[],
            y=[],
            meta={"role": "weights"},
            name="weights",
            marker=dict(color="#9ecae1", line=dict(width=0)),
            hovertemplate="%{x:.4g}: %{y} weights<extra></extra>",
        ),
        go.Scatter(
            x=[],
            y=[],
            meta={"role": "levels"},
            mode="lines",
            name="levels",
            line=dict(color="#d62728", width=1),
            opacity=0.75,
            hovertemplate="level %{x:.5g}<extra></extra>",
        ),
    ]


def update_histogram(fig: Any, weight: Any, levels: Any, layer: str, method: str) -> None:
    """Draw ``weight``'s histogram and ``levels`` into ``fig``'s traces (added if missing), in one batch."""
    values = _as_numpy(weight).reshape(-1)
    values = values[np.isfinite(values)]
    if isinstance(levels, QuantizationLevels):
        level_values, note = np.asarray(levels.values, dtype=np.float64), levels.note
    else:
        level_values, note = np.unique(np.asarray(levels, dtype=np.float64).reshape(-1)), ""
    if values.size:
        lo, hi = float(values.min()), float(values.max())
        if lo == hi:
            lo, hi = lo - 0.5, hi + 0.5
        counts, edges = np.histogram(values, bins=_BINS, range=(lo, hi))
    else:
        counts, edges = np.zeros(0, dtype=np.int64), np.zeros(1)
    top = float(counts.max()) * 1.05 if counts.size and counts.max() > 0 else 1.0
    drawn = level_values if level_values.size <= MAX_DRAWN_LEVELS else level_values[:0]
    line_x: list[float | None] = []
    line_y: list[float | None] = []
    for v in drawn.tolist():  # one trace of segments separated by None, not one shape per level
        line_x += [v, v, None]
        line_y += [0.0, top, None]
    name = f"{html.escape(method)} levels ({level_values.size})"
    if level_values.size > MAX_DRAWN_LEVELS:
        name += ", too many to draw"

    traces = {role: trace_with_role(fig, role) for role in ("weights", "levels")}
    if traces["weights"] is None or traces["levels"] is None:
        fig.add_traces(histogram_traces())
        traces = {"weights": fig.data[-2], "levels": fig.data[-1]}
    bars, lines = traces["weights"], traces["levels"]
    with batch(fig):
        bars.x = ((edges[:-1] + edges[1:]) / 2).tolist()
        bars.y = counts.tolist()
        bars.width = float(edges[1] - edges[0]) if counts.size else None
        bars.name = f"weights ({values.size:,})"
        lines.x, lines.y, lines.name = line_x, line_y, name
        lines.meta = {"role": "levels", "values": level_values.tolist()}
        fig.layout[axis_key(bars, "x")].update(title=dict(text="weight value"))
        fig.layout[axis_key(bars, "y")].update(title=dict(text="count"))
        title = f"{html.escape(layer)}: weights and {html.escape(method)} levels"
        if note:
            title += f"<br><sup>{html.escape(note)}</sup>"
        set_panel_title(fig, "histogram", title)


def weight_histogram(
    weight: torch.Tensor | np.ndarray,
    levels: QuantizationLevels | np.ndarray | list[float],
    *,
    layer: str,
    method: str,
    figure: go.Figure | None = None,
) -> go.Figure:
    """Histogram of a layer's weights with its quantization levels as vertical lines.

    Args:
        weight: the layer's float weight (``torch.Tensor`` or array).
        levels: a ``QuantizationLevels`` (from ``quantization_levels``) or the level values.
        layer: the layer's name (shown escaped).
        method: the quantizer's name, e.g. ``config.label``.
        figure: None builds a new ``go.Figure``; a figure or ``FigureWidget``
            is updated in place and returned.

    The bars are binned here (80 bins over the weight's range), so the figure
    carries counts, not every weight. At most ``MAX_DRAWN_LEVELS`` lines are
    drawn; the legend gives the count either way.
    """
    import plotly.graph_objects as go

    created = figure is None
    fig = (
        go.Figure(layout=dict(template="plotly_white", height=360, bargap=0, margin=dict(l=60, r=20, t=70, b=50)))
        if created
        else figure
    )
    update_histogram(fig, weight, levels, layer, method)
    return fig
