"""The sensitivity heatmap: layers down, bit widths (or sparsities) across, each cell a drop of the metric.

Each cell is the drop of the table's metric when only that layer is compressed (a table from
``squeezelab.engine.explore.sensitivity.layer_sensitivity``): in percentage points for a
percent metric such as top-1 accuracy, in the metric's own units otherwise (a cosine drops by
0.0088, not by "0.88 pp"). It shows *which* layers cost a recipe its accuracy.

``sensitivity_heatmap`` takes ``figure=None`` (build a new ``plotly.graph_objects.Figure``) or an
existing figure or ``FigureWidget`` to update in place, inside one ``batch_update``; its trace has
``meta["role"] == "sensitivity"`` (``layer_figure`` holds it as the left panel). Layer names are
HTML-escaped before they reach Plotly, which renders tick labels and hover text as HTML.
"""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING, Any

from squeezelab.engine.core.errors import ConfigError
from squeezelab.widgets._figure_parts import axis_key, batch, set_panel_title, trace_with_role
from squeezelab.widgets._labels import MetricLabels

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

__all__ = ["sensitivity_heatmap", "heatmap_trace", "update_heatmap", "SENSITIVITY_COLUMNS", "AXES"]

# Plus the metric's own column (``table.attrs["metric_key"]``: "accuracy", "cosine", ...) and its
# drop ("drop", or "<metric_key>_drop" in tables built by hand).
SENSITIVITY_COLUMNS = ("layer", "parameters", "axis", "value")
AXES = ("bits", "sparsity", "int8")  # int8: layer_sensitivity(runtime=Int8Dynamic() | Int8Static())
_COLORSCALE = "RdBu_r"  # diverging around 0: red = the metric lost, blue = the metric gained


def _format_value(axis: str, value: float) -> str:
    if axis == "int8":
        return "kept float, the rest int8"
    if axis == "bits":
        return f"{int(value)}" if float(value).is_integer() else f"{value:g}"
    return f"{value * 100:g}%"


def heatmap_trace() -> Any:
    """An empty heatmap trace with the ``"sensitivity"`` role (``update_heatmap`` fills it)."""
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
            # layer_sensitivity(method="estimate"): a row not measured holds an estimate, and says so
            estimated = bool(r.get("estimated", False))
            figure = f"estimate, not measured: drop {drop:.3g}" if estimated else labels.figure(r[labels.key], drop)
            hover_row.append(
                f"<b>{html.escape(layer)}</b> ({int(r['parameters']):,} parameters)<br>"
                f"{axis} {_format_value(axis, value)} on this layer only<br>"
                f"{html.escape(figure)}"
            )
        z.append(z_row)
        hover.append(hover_row)
    return layers, values, z, hover


def update_heatmap(fig: Any, table: Any, axis: str) -> None:
    """Draw ``table``'s ``axis`` rows into ``fig``'s sensitivity trace (added if missing), in one batch."""
    layers, values, z, hover = _sensitivity_grid(table, axis)
    labels = MetricLabels.of(table)
    trace = trace_with_role(fig, "sensitivity")
    if trace is None:
        fig.add_trace(heatmap_trace())
        trace = fig.data[-1]
    with batch(fig):
        trace.x = [_format_value(axis, v) for v in values]
        trace.y = [html.escape(name) for name in layers]
        trace.z = z
        trace.text = hover
        trace.meta = {"role": "sensitivity", "axis": axis, "layers": [html.escape(n) for n in layers], "values": values}
        # Drops in pp read well with 2 decimals; a cosine's drops can be 1e-5: 3 significant digits.
        trace.texttemplate = "%{z:.2f}" if labels.percent else "%{z:.3~g}"
        trace.colorbar.title.text = html.escape(labels.drop_title)
        xaxis, yaxis = fig.layout[axis_key(trace, "x")], fig.layout[axis_key(trace, "y")]
        xaxis.update(type="category", title=dict(text=f"{axis} (this layer only)"), side="bottom")
        # First layer on top; category type because names such as "0" or "2" would read as numbers.
        yaxis.update(type="category", autorange="reversed", title=dict(text="layer"), automargin=True)
        where = {"bits": "quantized", "sparsity": "pruned"}.get(axis, "kept float (the rest int8: its gain)")
        title = f"per-layer sensitivity: {html.escape(labels.drop_title)}, one layer {where} at a time"
        if table.attrs.get("estimate"):  # some cells are estimates (layer_sensitivity(method="estimate"))
            title += f" (estimate where not measured: {int(table.attrs.get('verified', 0))} rows measured)"
        set_panel_title(fig, "sensitivity", title if layers else f"no per-layer sensitivity for {axis}")


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
    update_heatmap(fig, table, axis)
    if created:
        fig.layout.height = max(280, 140 + 32 * len(fig.data[0].y or ()))
    return fig
