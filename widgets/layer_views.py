"""Per-layer views: the sensitivity heatmap and a layer's weight histogram with its quantization levels.

Two pictures that explain *why* a recipe costs accuracy:

* ``sensitivity_heatmap``: layers down, bit widths (or sparsities) across, each
  cell the drop of the table's metric when only that layer is compressed (a
  table from ``squeezelab.engine.explore.sensitivity.layer_sensitivity``): in
  percentage points for a percent metric such as top-1 accuracy, in the
  metric's own units otherwise (a cosine drops by 0.0088, not by "0.88 pp").
* ``weight_histogram``: one layer's weights with the values they can take
  after quantization drawn as vertical lines: the classic picture of a linear
  grid wasting levels on empty tails against k-means centroids that follow the
  distribution (Han et al. 2016, Fig. 4).

``quantization_levels`` finds those values with squeezelab's own encoders
(``encode_tensor``, ``quantize``/``dequantize``), so the lines are exactly what
the simulated model computes with.

Every builder takes ``figure=None`` (build a new ``plotly.graph_objects.Figure``)
or an existing figure or ``FigureWidget`` to update in place, inside one
``batch_update``. Traces are found by ``meta["role"]``, never by position:
``"sensitivity"`` (the heatmap), ``"weights"`` (the histogram bars) and
``"levels"`` (the vertical lines). ``layer_figure()`` holds all three in one
two-panel figure for the explorer; ``update_layer_views`` refreshes it.

Strings from the model or the user (layer names, method labels) are
HTML-escaped before they reach Plotly, which renders titles, tick labels and
hover text as HTML.
"""

from __future__ import annotations

import contextlib
import html
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from squeezelab.engine.core.errors import ConfigError
from squeezelab.widgets._labels import MetricLabels

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go
    import torch

    from squeezelab.engine.core.quantizers import FixedPoint, KMeansQuantization, LinearQuantization

__all__ = [
    "QuantizationLevels",
    "quantization_levels",
    "sensitivity_heatmap",
    "weight_histogram",
    "layer_figure",
    "update_layer_views",
    "SENSITIVITY_COLUMNS",
    "MAX_DRAWN_LEVELS",
]

# Plus the metric's own column (``table.attrs["metric_key"]``: "accuracy", "cosine", ...) and its
# drop ("drop", or "<metric_key>_drop" in tables built by hand).
SENSITIVITY_COLUMNS = ("layer", "parameters", "axis", "value")
AXES = ("bits", "sparsity")
# More lines than this would paint the panel solid (16-bit grids have 65,535): they are counted, not drawn.
MAX_DRAWN_LEVELS = 256
_BINS = 80
_COLORSCALE = "RdBu_r"  # diverging around 0: red = the metric lost, blue = the metric gained
_TITLES = {"sensitivity": "sensitivity_title", "histogram": "histogram_title"}


# --------------------------------------------------------------------------- helpers


def _batch(fig: Any) -> Any:
    """``fig.batch_update()`` (one message to the browser for a FigureWidget), or a no-op."""
    return fig.batch_update() if hasattr(fig, "batch_update") else contextlib.nullcontext()


def _trace(fig: Any, role: str) -> Any | None:
    for trace in fig.data:
        if trace.meta and trace.meta.get("role") == role:
            return trace
    return None


def _axis_key(trace: Any, letter: str) -> str:
    """Layout key of a trace's axis: ``"x2"`` -> ``"xaxis2"``."""
    ref = getattr(trace, f"{letter}axis", None) or letter
    return f"{letter}axis{ref[1:]}"


def _set_panel_title(fig: Any, panel: str, text: str) -> None:
    """A panel's title: its subplot annotation in ``layer_figure``, else the layout title."""
    for annotation in fig.layout.annotations or ():
        if annotation.name == _TITLES[panel]:
            annotation.text = text
            return
    fig.layout.title.text = text


def _as_numpy(weight: Any) -> np.ndarray:
    if hasattr(weight, "detach"):
        weight = weight.detach().to("cpu").float().numpy()
    return np.asarray(weight, dtype=np.float64)


def _format_value(axis: str, value: float) -> str:
    if axis == "bits":
        return f"{int(value)}" if float(value).is_integer() else f"{value:g}"
    return f"{value * 100:g}%"


# --------------------------------------------------------------------------- sensitivity heatmap


def _heatmap_trace() -> Any:
    import plotly.graph_objects as go

    return go.Heatmap(
        z=[],
        x=[],
        y=[],
        meta={"role": "sensitivity"},
        colorscale=_COLORSCALE,
        zmid=0.0,
        texttemplate="%{z:.2f}",
        hovertemplate="%{text}<extra></extra>",
        colorbar=dict(title=dict(text="drop (pp)"), thickness=12),
        xgap=1,
        ygap=1,
        showscale=True,
    )


def _metric_columns(table: Any) -> tuple[MetricLabels, str]:
    """The table's metric labels and its drop column; ``ConfigError`` naming any missing column."""
    labels = MetricLabels.of(table)
    columns = set(getattr(table, "columns", ()))
    drop = next((c for c in ("drop", f"{labels.key}_drop") if c in columns), None)
    missing = [c for c in (*SENSITIVITY_COLUMNS, labels.key) if c not in columns]
    if drop is None:
        missing.append(f"drop (or {labels.key}_drop)")
    if missing:
        raise ConfigError(
            f"the sensitivity table has no column(s) {missing}; it needs {[*SENSITIVITY_COLUMNS, labels.key]} and a "
            "drop column (the table squeezelab.engine.explore.sensitivity.layer_sensitivity returns)."
        )
    return labels, str(drop)


def _sensitivity_grid(table: Any, axis: str) -> tuple[list[str], list[float], list[list[float | None]], list[list[str]]]:
    """``(layers, values, z, hover)`` of one axis: z[i][j] is layer i's drop at value j (pp for percent metrics)."""
    if axis not in AXES:
        raise ConfigError(f"axis={axis!r}; use 'bits' or 'sparsity'.")
    labels, drop_column = _metric_columns(table)
    rows = table[table["axis"] == axis]
    duplicated = rows.duplicated(["layer", "value"])
    if duplicated.any():
        first = rows[duplicated].iloc[0]
        raise ConfigError(
            f"the sensitivity table holds layer {first['layer']!r} at {axis}={first['value']!r} more than once; "
            "keep one row per (layer, axis, value)."
        )
    layers = list(dict.fromkeys(str(name) for name in rows["layer"]))  # model order, as measured
    # More aggressive to the right: fewer bits, more sparsity.
    values = sorted({float(v) for v in rows["value"]}, reverse=axis == "bits")
    cell = {(str(r["layer"]), float(r["value"])): r for _, r in rows.iterrows()}
    z: list[list[float | None]] = []
    hover: list[list[str]] = []
    for layer in layers:
        z_row, hover_row = [], []
        for value in values:
            r = cell.get((layer, value))
            drop = None if r is None or r[drop_column] is None else float(r[drop_column])
            if drop is None or math.isnan(drop):
                z_row.append(None)
                hover_row.append("")
                continue
            z_row.append(drop * labels.drop_scale)
            hover_row.append(
                f"<b>{html.escape(layer)}</b> ({int(r['parameters']):,} parameters)<br>"
                f"{axis} {_format_value(axis, value)} on this layer only<br>"
                f"{html.escape(labels.figure(r[labels.key], drop))}"
            )
        z.append(z_row)
        hover.append(hover_row)
    return layers, values, z, hover


def _update_heatmap(fig: Any, table: Any, axis: str) -> None:
    layers, values, z, hover = _sensitivity_grid(table, axis)
    labels = MetricLabels.of(table)
    trace = _trace(fig, "sensitivity")
    if trace is None:
        fig.add_trace(_heatmap_trace())
        trace = fig.data[-1]
    with _batch(fig):
        trace.x = [_format_value(axis, v) for v in values]
        trace.y = [html.escape(name) for name in layers]
        trace.z = z
        trace.text = hover
        trace.meta = {"role": "sensitivity", "axis": axis, "layers": [html.escape(n) for n in layers], "values": values}
        # Drops in pp read well with 2 decimals; a cosine's drops can be 1e-5: 3 significant digits.
        trace.texttemplate = "%{z:.2f}" if labels.percent else "%{z:.3~g}"
        trace.colorbar.title.text = html.escape(labels.drop_title)
        xaxis, yaxis = fig.layout[_axis_key(trace, "x")], fig.layout[_axis_key(trace, "y")]
        xaxis.update(type="category", title=dict(text=f"{axis} (this layer only)"), side="bottom")
        # First layer on top; category type because names such as "0" or "2" would read as numbers.
        yaxis.update(type="category", autorange="reversed", title=dict(text="layer"), automargin=True)
        where = "quantized" if axis == "bits" else "pruned"
        title = f"per-layer sensitivity: {html.escape(labels.drop_title)}, one layer {where} at a time"
        _set_panel_title(fig, "sensitivity", title if layers else f"no per-layer sensitivity for {axis}")


def sensitivity_heatmap(table: pd.DataFrame, axis: str = "bits", *, figure: go.Figure | None = None) -> go.Figure:
    """Heatmap of per-layer drops of the table's metric: layers down, ``axis`` values across.

    Args:
        table: per-layer sensitivity (a DataFrame with columns ``layer``,
            ``parameters``, ``axis``, ``value``, the metric's column and ``drop``, as
            ``layer_sensitivity`` returns; ``table.attrs`` names the metric; without attrs
            the table is read as top-1 ``accuracy`` with ``accuracy_drop``).
        axis: ``"bits"`` or ``"sparsity"``: which rows of ``table`` to draw.
        figure: None builds a new ``go.Figure``; a figure or ``FigureWidget``
            (e.g. from ``layer_figure``) is updated in place and returned.

    Returns:
        The figure. Its ``"sensitivity"`` trace holds ``z[i][j]`` = drop of
        layer ``y[i]`` at ``x[j]``: in percentage points for a percent metric, in the
        metric's units otherwise (None where not measured); the colour bar says which.

    Examples:
        >>> import pandas as pd
        >>> t = pd.DataFrame({"layer": ["fc1", "fc1", "fc2"], "parameters": [100, 100, 20],
        ...                   "axis": "bits", "value": [8, 4, 4],
        ...                   "accuracy": [0.9, 0.8, 0.85], "accuracy_drop": [0.0, 0.1, 0.05]})
        >>> fig = sensitivity_heatmap(t)
        >>> fig.data[0].x, [list(row) for row in fig.data[0].z]
        (('8', '4'), [[0.0, 10.0], [None, 5.0]])
    """
    import plotly.graph_objects as go

    created = figure is None
    fig = go.Figure(layout=dict(template="plotly_white", margin=dict(l=60, r=20, t=60, b=50))) if created else figure
    _update_heatmap(fig, table, axis)
    if created:
        fig.layout.height = max(280, 140 + 32 * len(fig.data[0].y or ()))
    return fig


# --------------------------------------------------------------------------- quantization levels


@dataclass(frozen=True)
class QuantizationLevels:
    """The values a layer's weight can take under one quantization config.

    Attributes:
        values: sorted distinct float values.
        method: the config's label (``"linear4-sym-perchannel"``, ``"kmeans4"``...).
        channel: for per-channel linear quantization, the channel whose grid
            ``values`` is (the one with the widest range, the coarsest grid);
            None otherwise.
        frac_bits: the fractional length ``n`` of a fixed-point Qm.n grid, else None.
        note: one line saying what ``values`` are, for titles and legends.
    """

    values: np.ndarray
    method: str
    channel: int | None = None
    frac_bits: int | None = None
    note: str = ""

    def __len__(self) -> int:
        return int(self.values.size)


def quantization_levels(
    weight: torch.Tensor | np.ndarray, config: LinearQuantization | KMeansQuantization | FixedPoint
) -> QuantizationLevels:
    """The distinct values ``weight`` can take after quantization under ``config``.

    * ``LinearQuantization``: the full decoded grid (every code from qmin to
      qmax). Per channel, each channel has its own grid: this is the grid of the
      channel with the widest range (named in ``channel``).
    * ``KMeansQuantization``: the layer's centroids (its codebook).
    * ``FixedPoint``: the Qm.n grid between the codes of the weight's minimum
      and maximum.

    Args:
        weight: a layer's weight (``torch.Tensor`` or array).
        config: ``LinearQuantization``, ``KMeansQuantization`` or ``FixedPoint``.

    Examples:
        >>> import torch
        >>> from squeezelab.engine.core.quantizers import LinearQuantization
        >>> w = torch.tensor([[-1.0, 0.5], [0.25, 0.1]])
        >>> levels = quantization_levels(w, LinearQuantization(bits=2))
        >>> levels.values.tolist(), levels.channel
        ([-1.0, 0.0, 1.0], 0)
    """
    import torch

    from squeezelab.engine.quantization.encoding import encode_tensor
    from squeezelab.engine.quantization import dequantize, quantize
    from squeezelab.engine.quantization.linear import QParams
    from squeezelab.engine.core.quantizers import FixedPoint, KMeansQuantization, LinearQuantization

    w = weight.detach().to("cpu", torch.float32) if isinstance(weight, torch.Tensor) else torch.as_tensor(
        np.asarray(weight, dtype=np.float32)
    )
    if w.numel() == 0:
        raise ConfigError("the weight is empty; pass a layer weight with at least one value.")
    if not isinstance(config, (LinearQuantization, KMeansQuantization, FixedPoint)):
        raise ConfigError(
            f"config={config!r} has no short list of levels; use LinearQuantization(...), "
            "KMeansQuantization(...) or FixedPoint(...)."
        )
    encoded = encode_tensor(w, config)
    if isinstance(config, KMeansQuantization):
        values = np.asarray(encoded.arrays["codebook"], dtype=np.float64)
        return QuantizationLevels(
            np.unique(values), config.label, note=f"{values.size} k-means centroids (the layer's codebook)"
        )
    meta, scale, zero_point = encoded.meta, encoded.arrays["scale"], encoded.arrays["zero_point"]
    channel = None
    if meta["axis"] is not None:
        # Each channel's range is scale * (qmax - qmin): the largest scale is the widest range.
        channel = int(np.argmax(scale))
        scale, zero_point = scale[channel], zero_point[channel]
    qp = QParams(
        scale=torch.as_tensor(np.float32(scale)),
        zero_point=torch.as_tensor(np.int32(zero_point)),
        qmin=meta["qmin"],
        qmax=meta["qmax"],
    )
    if isinstance(config, FixedPoint):
        frac = int(meta["frac_bits"])
        lo, hi = (int(quantize(v.reshape(1), qp)) for v in (w.min(), w.max()))
        codes = torch.arange(lo, hi + 1, dtype=torch.int32)
        values = np.unique(dequantize(codes, qp).numpy().astype(np.float64))
        m = config.total_bits - 1 - frac
        return QuantizationLevels(
            values, config.label, frac_bits=frac,
            note=f"Q{m}.{frac} grid (step 2^-{frac}) within the weight's range, {values.size} levels",
        )
    codes = torch.arange(meta["qmin"], meta["qmax"] + 1, dtype=torch.int32)
    values = np.unique(dequantize(codes, qp).numpy().astype(np.float64))
    where = f"grid of channel {channel} (widest range)" if channel is not None else "per-tensor grid"
    return QuantizationLevels(values, config.label, channel=channel, note=f"{where}, {values.size} levels")


# --------------------------------------------------------------------------- weight histogram


def _histogram_traces() -> list[Any]:
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


def _update_histogram(fig: Any, weight: Any, levels: Any, layer: str, method: str) -> None:
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

    traces = {role: _trace(fig, role) for role in ("weights", "levels")}
    if traces["weights"] is None or traces["levels"] is None:
        fig.add_traces(_histogram_traces())
        traces = {"weights": fig.data[-2], "levels": fig.data[-1]}
    bars, lines = traces["weights"], traces["levels"]
    with _batch(fig):
        bars.x = ((edges[:-1] + edges[1:]) / 2).tolist()
        bars.y = counts.tolist()
        bars.width = float(edges[1] - edges[0]) if counts.size else None
        bars.name = f"weights ({values.size:,})"
        lines.x, lines.y, lines.name = line_x, line_y, name
        lines.meta = {"role": "levels", "values": level_values.tolist()}
        fig.layout[_axis_key(bars, "x")].update(title=dict(text="weight value"))
        fig.layout[_axis_key(bars, "y")].update(title=dict(text="count"))
        title = f"{html.escape(layer)}: weights and {html.escape(method)} levels"
        if note:
            title += f"<br><sup>{html.escape(note)}</sup>"
        _set_panel_title(fig, "histogram", title)


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
    _update_histogram(fig, weight, levels, layer, method)
    return fig


# --------------------------------------------------------------------------- both panels


def layer_figure(*, widget: bool = False) -> go.Figure:
    """An empty two-panel figure: sensitivity heatmap (left), weight histogram (right).

    ``widget=True`` gives a ``plotly.graph_objects.FigureWidget`` for the explorer,
    which creates it once and refreshes it with ``update_layer_views``.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.55, 0.45],
        horizontal_spacing=0.17,
        subplot_titles=["per-layer sensitivity", "weights and quantization levels"],
    )
    for annotation, name in zip(fig.layout.annotations, _TITLES.values()):
        annotation.name = name
    heatmap = _heatmap_trace()
    # The colour bar sits in the gap between the panels instead of over the histogram.
    heatmap.colorbar.update(x=fig.layout.xaxis.domain[1] + 0.01, xanchor="left", len=0.9)
    fig.add_trace(heatmap, row=1, col=1)
    for trace in _histogram_traces():
        fig.add_trace(trace, row=1, col=2)
    fig.update_xaxes(type="category", row=1, col=1)
    fig.update_yaxes(type="category", autorange="reversed", automargin=True, row=1, col=1)
    fig.update_layout(
        height=440,
        bargap=0,
        template="plotly_white",
        margin=dict(l=60, r=20, t=80, b=50),
        legend=dict(orientation="h", yanchor="top", y=-0.15, x=0.6),
    )
    return go.FigureWidget(fig) if widget else fig


def update_layer_views(
    fig: go.Figure,
    sensitivity_table: pd.DataFrame,
    axis: str,
    weight: torch.Tensor | np.ndarray,
    levels: QuantizationLevels | np.ndarray | list[float],
    layer: str,
    method: str,
) -> None:
    """Refresh both panels of a ``layer_figure`` in place, in one ``batch_update``.

    Args:
        fig: the figure from ``layer_figure`` (a ``FigureWidget`` in the explorer).
        sensitivity_table: per-layer sensitivity (see ``sensitivity_heatmap``).
        axis: ``"bits"`` or ``"sparsity"``.
        weight, levels, layer, method: as in ``weight_histogram``.
    """
    with _batch(fig):
        _update_heatmap(fig, sensitivity_table, axis)
        _update_histogram(fig, weight, levels, layer, method)
