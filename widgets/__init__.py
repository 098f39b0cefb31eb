"""squeezelab.widgets: the JupyterLab explorer and self-contained HTML reports.

Names load lazily, so ``import squeezelab.widgets`` does not import plotly,
ipywidgets or torch until one is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from squeezelab._lazy import lazy_attributes

_LAZY = {
    "Explorer": "squeezelab.widgets.explorer",
    "report": "squeezelab.widgets.html_report",
    "choose_point": "squeezelab.widgets.html_report",
    "tradeoff_figure": "squeezelab.widgets.tradeoff",
    "update_tradeoff": "squeezelab.widgets.tradeoff",
    "layer_figure": "squeezelab.widgets.layer_views",
    "update_layer_views": "squeezelab.widgets.layer_views",
    "quantization_levels": "squeezelab.widgets.levels",
    "sensitivity_heatmap": "squeezelab.widgets.heatmap",
    "weight_histogram": "squeezelab.widgets.histogram",
}


__getattr__, __dir__ = lazy_attributes("squeezelab.widgets", globals(), _LAZY)


if TYPE_CHECKING:
    from squeezelab.widgets.explorer import Explorer
    from squeezelab.widgets.html_report import choose_point, report
    from squeezelab.widgets.heatmap import sensitivity_heatmap
    from squeezelab.widgets.histogram import weight_histogram
    from squeezelab.widgets.layer_views import layer_figure, update_layer_views
    from squeezelab.widgets.levels import quantization_levels
    from squeezelab.widgets.tradeoff import tradeoff_figure, update_tradeoff

__all__ = [
    "Explorer",
    "report",
    "choose_point",
    "tradeoff_figure",
    "update_tradeoff",
    "layer_figure",
    "update_layer_views",
    "quantization_levels",
    "sensitivity_heatmap",
    "weight_histogram",
]
