"""squeezelab.widgets: the JupyterLab explorer and self-contained HTML reports.

Names load lazily, so ``import squeezelab.widgets`` does not import plotly,
ipywidgets or torch until one is used.
"""

from __future__ import annotations

from squeezelab._lazy import lazy_attributes

# Each module (under squeezelab.widgets) and the public names it holds: the one list of them.
_PUBLIC = {
    "explorer": ["Explorer"],
    "html_report": ["report", "choose_point"],
    "tradeoff": ["tradeoff_figure", "update_tradeoff"],
    "layer_views": ["layer_figure", "update_layer_views"],
    "levels": ["quantization_levels"],
    "heatmap": ["sensitivity_heatmap"],
    "histogram": ["weight_histogram"],
}

_LAZY = {name: f"squeezelab.widgets.{module}" for module, names in _PUBLIC.items() for name in names}

__getattr__, __dir__ = lazy_attributes("squeezelab.widgets", globals(), _LAZY)

__all__ = list(_LAZY)
