"""How the per-layer figures find and change their parts, whether built alone or as panels of one figure.

Traces are found by ``meta["role"]``, never by position: ``"sensitivity"`` (the heatmap),
``"weights"`` (the histogram bars) and ``"levels"`` (the vertical lines). A panel's title is its
subplot annotation in ``layer_figure`` (named after the panel), else the figure's own title.
Every update runs inside ``batch`` (one message to the browser for a ``FigureWidget``).
"""

from __future__ import annotations

import contextlib
from typing import Any

__all__ = ["PANEL_TITLES", "batch", "trace_with_role", "axis_key", "set_panel_title"]

# panel -> the name of its title annotation in layer_figure
PANEL_TITLES = {"sensitivity": "sensitivity_title", "histogram": "histogram_title"}


def batch(fig: Any) -> Any:
    """``fig.batch_update()`` (one message to the browser for a FigureWidget), or a no-op."""
    return fig.batch_update() if hasattr(fig, "batch_update") else contextlib.nullcontext()


def trace_with_role(fig: Any, role: str) -> Any | None:
    """The figure's trace whose ``meta["role"]`` is ``role``, or None."""
    for trace in fig.data:
        if trace.meta and trace.meta.get("role") == role:
            return trace
    return None


def axis_key(trace: Any, letter: str) -> str:
    """Layout key of a trace's axis: ``"x2"`` -> ``"xaxis2"``."""
    ref = getattr(trace, f"{letter}axis", None) or letter
    return f"{letter}axis{ref[1:]}"


def set_panel_title(fig: Any, panel: str, text: str) -> None:
    """A panel's title: its subplot annotation in ``layer_figure``, else the layout title."""
    for annotation in fig.layout.annotations or ():
        if annotation.name == PANEL_TITLES[panel]:
            annotation.text = text
            return
    fig.layout.title.text = text
