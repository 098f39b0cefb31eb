"""Per-layer views: the sensitivity heatmap beside a layer's weight histogram with its quantization levels.

Two pictures that explain *why* a recipe costs accuracy, drawn as the two panels of one figure
for the explorer:

* the sensitivity heatmap (``squeezelab.widgets.heatmap.sensitivity_heatmap``): layers down,
  bit widths (or sparsities) across, each cell the drop of the table's metric when only that
  layer is compressed;
* the weight histogram (``squeezelab.widgets.histogram.weight_histogram``): one layer's weights
  with the values they can take after quantization (``squeezelab.widgets.levels.quantization_levels``)
  drawn as vertical lines.

Each builder also works alone, on its own figure. ``layer_figure()`` holds all three traces (found
by ``meta["role"]``: ``"sensitivity"``, ``"weights"``, ``"levels"``) in one two-panel figure;
``update_layer_views`` refreshes both panels in one ``batch_update``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from squeezelab.widgets._figure_parts import PANEL_TITLES, batch
from squeezelab.widgets.heatmap import heatmap_trace, update_heatmap
from squeezelab.widgets.histogram import histogram_traces, update_histogram

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import plotly.graph_objects as go
    import torch

    from squeezelab.widgets.levels import QuantizationLevels

__all__ = ["layer_figure", "update_layer_views"]


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
    for annotation, name in zip(fig.layout.annotations, PANEL_TITLES.values()):
        annotation.name = name
    heatmap = heatmap_trace()
    # The colour bar sits in the gap between the panels instead of over the histogram.
    heatmap.colorbar.update(x=fig.layout.xaxis.domain[1] + 0.01, xanchor="left", len=0.9)
    fig.add_trace(heatmap, row=1, col=1)
    for trace in histogram_traces():
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
    with batch(fig):
        update_heatmap(fig, sensitivity_table, axis)
        update_histogram(fig, weight, levels, layer, method)
