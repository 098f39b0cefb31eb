"""The explorer's figures panel: one small HTML table of the selected point, in its metric's units.

"cosine to fp32 | 0.9912", "drop | 0.0088 (95% interval 0.0080 to 0.0096)" for a cosine;
"top-1 accuracy | 98.00 %", "drop | 1.23 pp (...)" for a percent metric. The drop is the
paired one the engine measured against the fp32 baseline (same samples), with its interval.
"""

from __future__ import annotations

import html
import json

from squeezelab.engine.measurement.point import Point
from squeezelab.engine.measurement.stats import speedup_text
from squeezelab.widgets._labels import MetricLabels

__all__ = ["figures_panel", "drop_text"]


def _same_recipe(a: Point, b: Point | None) -> bool:
    return b is not None and json.dumps(a.recipe, sort_keys=True) == json.dumps(b.recipe, sort_keys=True)


def drop_text(point: Point, baseline: Point | None, labels: MetricLabels) -> str:
    """The drop against the baseline with its interval; the plain difference when there is no interval."""
    if _same_recipe(point, baseline):
        return f"{labels.drop(0.0)} (the baseline)"
    d = point.drop
    if d is None:  # a scalar-only metric: no per-sample scores, no interval
        base = baseline.value if baseline is not None else None
        return labels.drop(None if base is None or point.value is None else base - point.value)
    return f"{labels.drop(d.drop)} ({d.confidence:.0%} interval {labels.drop(d.low)} to {labels.drop(d.high)})"


def figures_panel(point: Point, baseline: Point | None, labels: MetricLabels) -> str:
    """The panel's HTML (every string escaped)."""
    kind = "executable (ONNX Runtime)" if point.executable else "SIMULATED (PyTorch with decoded weights)"
    latency = "not measured" if point.latency_ms is None else f"{point.latency_ms:.3f} ms"
    speed = point.speedup
    if _same_recipe(point, baseline):
        speedup = "1.00× (the baseline)"
    elif speed is None:
        speedup = "n/a"
    else:
        speedup = speedup_text(speed.median, speed.low, speed.high, "×")
    cells = [
        ("recipe", point.label),
        (labels.name, labels.value(point.value)),
        ("drop", drop_text(point, baseline, labels)),
        ("size", f"{point.size_bytes:,} B"),
        ("compression", f"{baseline.size_bytes / point.size_bytes:.2f}×" if baseline is not None else "n/a"),
        ("latency", latency),
        ("speedup", speedup),
        ("kind", kind),
    ]
    body = "".join(
        f"<tr><th style='text-align:left;padding-right:12px'>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
        for k, v in cells
    )
    return f"<table class='squeezelab-figures'>{body}</table>"
