"""The trade-off figure: the metric against size and against latency, with the Pareto frontier.

The y axis is the sweep's metric, named after it ("cosine to fp32", "top-1
accuracy"), in % only for percent metrics; hover text reads like
"cosine to fp32 0.9912 (drop 0.0088)".

One figure, two panels, a fixed set of traces per panel, each tagged in
``meta`` with its ``role`` and ``panel`` so code (and browser tests) can find
them without relying on their order:

=============  =====================================================
role           what it draws
=============  =====================================================
executable     measured points that run as real kernels (filled circles)
simulated      simulated points (open diamonds, "simulated" in the legend)
pareto         the frontier over all points (a step line)
baseline       the fp32 baseline (a star)
current        the point the sliders select (a large ring)
=============  =====================================================

``tradeoff_figure()`` builds the empty figure once (as a ``FigureWidget``
for the explorer, a plain ``Figure`` for reports); ``update_tradeoff``
rewrites the traces' data from a sweep table inside one ``batch_update``.

Axes that read right: the size axis is logarithmic with ticks named 10k, 20k,
50k, 100k (``_axes.log_axis``); each point on the latency panel carries a bar
over the middle half of its timed rounds (25th to 75th percentile), so the
spread of a median is on the page, and the latency axis names the batch size.
"""

from __future__ import annotations

import contextlib
import html
from typing import Any

from squeezelab.engine.explore.pareto import pareto_front
from squeezelab.widgets._axes import log_axis
from squeezelab.widgets._labels import MetricLabels

__all__ = ["tradeoff_figure", "update_tradeoff", "name_axes", "traces_by_role", "latency_spread", "PANELS", "ROLES"]

PANELS = (("size", "size_bytes", "size (bytes, log scale)"), ("latency", "latency_ms", "latency (ms per call)"))
ROLES = ("executable", "simulated", "pareto", "baseline", "current")

_STYLE = {
    "executable": dict(mode="markers", marker=dict(symbol="circle", size=8, color="#1f77b4"), name="executable (ONNX Runtime)"),
    "simulated": dict(
        mode="markers",
        marker=dict(symbol="diamond-open", size=9, color="#ff7f0e", line=dict(width=2)),
        name="simulated (PyTorch, not real kernels)",
    ),
    "pareto": dict(mode="lines", line=dict(shape="hv", color="#2ca02c", width=2), name="Pareto frontier"),
    "baseline": dict(mode="markers", marker=dict(symbol="star", size=14, color="#7f7f7f"), name="fp32 baseline"),
    "current": dict(
        mode="markers",
        marker=dict(symbol="circle-open", size=20, color="#d62728", line=dict(width=3)),
        name="current point",
    ),
}


def tradeoff_figure(*, widget: bool = False, title: str = "Trade-off", metric: MetricLabels | None = None) -> Any:
    """An empty two-panel trade-off figure; ``widget=True`` gives a ``plotly.graph_objects.FigureWidget``.

    ``metric`` names the y axes (default: top-1 accuracy); ``update_tradeoff`` renames them after
    the table it draws.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    labels = metric or MetricLabels.of(None)
    fig = make_subplots(rows=1, cols=2, subplot_titles=[f"{p[0]}" for p in PANELS], horizontal_spacing=0.08)
    for col, (panel, _, axis_title) in enumerate(PANELS, start=1):
        for role in ROLES:
            style = _STYLE[role]
            fig.add_trace(
                go.Scatter(
                    x=[],
                    y=[],
                    meta={"role": role, "panel": panel},
                    legendgroup=role,
                    showlegend=col == 1,
                    hovertemplate="%{text}<extra></extra>",
                    **style,
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(title_text=axis_title, type="log" if panel == "size" else "linear", row=1, col=col)
    fig.update_layout(
        title=html.escape(title),
        height=420,
        margin=dict(l=60, r=20, t=70, b=50),
        legend=dict(orientation="h", yanchor="bottom", y=-0.35, x=0),
        template="plotly_white",
    )
    name_axes(fig, labels)
    return go.FigureWidget(fig) if widget else fig


def name_axes(fig: Any, labels: MetricLabels) -> None:
    """Title the y axes and panels after the metric (``"cosine to fp32 vs size"``), % ticks only for percent metrics."""
    name = html.escape(labels.name)
    if fig.layout.yaxis.title.text == name and (fig.layout.yaxis.tickformat or "") == labels.tickformat:
        return  # already named: skip the relayout (a cached point is redrawn in tens of milliseconds)
    fig.update_yaxes(title_text=name, tickformat=labels.tickformat)
    for annotation, (panel, _, _) in zip(fig.layout.annotations, PANELS):
        annotation.text = f"{name} vs {panel}"


def _axes_for(fig: Any, rows: Any) -> None:
    """Size ticks named 10k, 20k, ... over the table's sizes; the latency axis titled with its batch size."""
    size = log_axis(rows["size_bytes"]) if "size_bytes" in rows else {"type": "log"}
    latency_title = _latency_title(rows)
    current = fig.layout.xaxis
    if tuple(current.tickvals or ()) != tuple(size.get("tickvals", ())) or fig.layout.xaxis2.title.text != latency_title:
        fig.update_xaxes(**size, row=1, col=1)  # skipped when unchanged: a cached point redraws in milliseconds
        fig.update_xaxes(title_text=latency_title, row=1, col=2)


def traces_by_role(fig: Any, panel: str) -> dict[str, Any]:
    """``{role: trace}`` of one panel (``"size"`` or ``"latency"``)."""
    return {t.meta["role"]: t for t in fig.data if t.meta and t.meta.get("panel") == panel}


def _hover(row: Any, labels: MetricLabels) -> str:
    from squeezelab.engine.measurement.stats import number_text as fmt

    spread = ""
    if fmt(row.get("latency_p25_ms"), ".3f") != "n/a":
        spread = f", middle half of the rounds {fmt(row['latency_p25_ms'], '.3f')}-{fmt(row['latency_p75_ms'], '.3f')} ms"
    return (
        f"<b>{html.escape(str(row['label']))}</b><br>"
        f"{html.escape(labels.figure(row['value'], row.get('drop')))}<br>"
        f"size {int(row['size_bytes']):,} B (compression {fmt(row['compression'], '.2f')}×)<br>"
        f"latency {fmt(row['latency_ms'], '.3f')} ms{spread} (speedup {fmt(row['speedup'], '.2f')}×)<br>"
        f"{row['kind']}"
    )


def latency_spread(rows: Any) -> dict[str, Any] | None:
    """Plotly ``error_x`` bars from each row's median to its 25th and 75th percentile latency; None without them."""
    if "latency_p25_ms" not in rows or "latency_p75_ms" not in rows or not len(rows):
        return None
    median = rows["latency_ms"].astype(float)
    high = (rows["latency_p75_ms"].astype(float) - median).clip(lower=0).fillna(0.0)
    low = (median - rows["latency_p25_ms"].astype(float)).clip(lower=0).fillna(0.0)
    return dict(type="data", symmetric=False, array=high.tolist(), arrayminus=low.tolist(), visible=True, thickness=1.5, width=3)


def _latency_title(rows: Any) -> str:
    sizes = sorted({int(b) for b in rows.get("latency_batch_size", []) if b == b}) if "latency_batch_size" in rows else []
    batch = f", batch {sizes[0]}" if len(sizes) == 1 else ""
    return f"latency (ms per call{batch}; bars: middle half of the timed rounds)"


def update_tradeoff(fig: Any, table: Any, current: int | None = None) -> None:
    """Show ``table`` (a sweep table) in ``fig``; ``current`` is the position of the selected row.

    The y value is the table's ``value`` column (the metric ``table.attrs`` names); the axes are
    titled after that metric. Everything changes inside one ``batch_update`` (one message to the browser).
    """
    labels = MetricLabels.of(table)
    rows = table.reset_index(drop=True)
    text = [_hover(r, labels) for _, r in rows.iterrows()]
    batch = fig.batch_update() if hasattr(fig, "batch_update") else contextlib.nullcontext()
    with batch:
        name_axes(fig, labels)
        _axes_for(fig, rows)
        for panel, column, _ in PANELS:
            traces = traces_by_role(fig, panel)
            valid = rows[column].notna() & rows["value"].notna()
            for role in ("executable", "simulated"):
                pick = valid & (rows["executable"] == (role == "executable")) & ~rows["is_baseline"]
                traces[role].x = rows.loc[pick, column].tolist()
                traces[role].y = rows.loc[pick, "value"].tolist()
                traces[role].text = [text[i] for i in rows.index[pick]]
                if panel == "latency":
                    traces[role].error_x = latency_spread(rows[pick]) or dict(visible=False)
            # On the latency panel, simulated points run in PyTorch with decoded weights: their times
            # say nothing about a deployed low-bit kernel, so the frontier is drawn over executable
            # points only (with simulated points everywhere else it would mix two runtimes).
            pool = rows[valid] if panel == "size" else rows[valid & rows["executable"].astype(bool)]
            front = pareto_front(pool, column, "value")
            traces["pareto"].x = front[column].tolist()
            traces["pareto"].y = front["value"].tolist()
            traces["pareto"].text = [text[i] for i in front.index]
            base = rows[rows["is_baseline"] & valid]
            traces["baseline"].x = base[column].tolist()
            traces["baseline"].y = base["value"].tolist()
            traces["baseline"].text = [text[i] for i in base.index]
            if panel == "latency":
                traces["baseline"].error_x = latency_spread(base) or dict(visible=False)
            if current is not None and bool(valid.iloc[current]):
                traces["current"].x = [rows[column].iloc[current]]
                traces["current"].y = [rows["value"].iloc[current]]
                traces["current"].text = [text[current]]
            else:
                traces["current"].x, traces["current"].y, traces["current"].text = [], [], []
