"""How widgets name and format a metric, and what the progress display says at each stage (no widgets needed)."""

from __future__ import annotations

import doctest

import numpy as np
import pandas as pd
import pytest

from squeezelab.engine.measurement.point import Point
from squeezelab.engine.measurement.scoring import Metric, cosine_to_baseline, top1_accuracy
from squeezelab.widgets import _explorer_choices, _labels, _progress
from squeezelab.widgets._labels import MetricLabels
from squeezelab.widgets._progress import STAGES, StageProgress


@pytest.mark.parametrize("module", [_labels, _progress, _explorer_choices])
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_labels_come_from_table_attrs_points_and_metrics():
    table = pd.DataFrame({"value": [1.0, 0.99]})
    table.attrs.update(metric="cosine to fp32", metric_key="cosine", percent=False)
    assert MetricLabels.of(table) == MetricLabels("cosine to fp32", "cosine", False)
    point = Point(label="x", recipe={}, executable=True, runtime="onnx", bits=32, weight_sparsity=0.0,
                  metric="negative MSE", metric_key="neg_mse", percent=False)
    assert MetricLabels.of(point) == MetricLabels("negative MSE", "neg_mse", False)
    assert MetricLabels.of(top1_accuracy) == MetricLabels("top-1 accuracy", "accuracy", True)
    assert MetricLabels.of(pd.DataFrame({"accuracy": [0.9]})).percent  # older tables: top-1


def test_units_follow_the_metric():
    cosine, top1 = MetricLabels.of(cosine_to_baseline), MetricLabels.of(top1_accuracy)
    assert cosine.figure(0.99121, 0.00879) == "cosine to fp32 0.9912 (drop 0.0088)"
    assert top1.figure(0.98, 0.0123) == "top-1 accuracy 98.00 % (drop 1.23 pp)"
    assert (cosine.drop_title, top1.drop_title) == ("drop of cosine to fp32", "drop (pp)")
    assert (cosine.drop_scale, top1.drop_scale) == (1.0, 100.0)
    assert (cosine.tickformat, top1.tickformat) == ("", ".1%")
    assert cosine.figure(0.5, None) == "cosine to fp32 0.5000" and cosine.value(np.nan) == "n/a"
    assert cosine.metric is cosine_to_baseline  # the built-in, so formats match the engine's own


def test_a_custom_metrics_labels_format_but_never_score():
    labels = MetricLabels.of(Metric(lambda o, r: np.ones(len(o)), name="recall@5", percent=True))
    assert labels.figure(0.5, 0.01) == "recall@5 50.00 % (drop 1.00 pp)"
    with pytest.raises(TypeError, match="only formats"):
        labels.metric.scores(np.zeros((2, 2)), np.zeros((2, 2)))


def test_the_progress_bar_moves_forward_through_the_stages():
    timed, untimed = StageProgress(64, 20, "cosine"), StageProgress(64, 0, "cosine")
    for p in (timed, untimed):
        stages = STAGES if p.rounds else STAGES[:2]
        positions = [p.fraction(s, f) for s in stages for f in (0.0, 0.5, 1.0)]
        assert positions == sorted(positions) and positions[0] == 0.0 and positions[-1] == 1.0
    assert timed.fraction("timing", 2.0) == 1.0 and timed.fraction("compressing", -1) == 0.0  # clamped
    assert timed.text("timing", 1.0, baseline=True) == "timing: round 20 of 20"
    assert untimed.text("evaluating", 1.0) == "evaluating cosine: 64 of 64 samples"


def test_the_private_modules_define_what_they_export():
    from squeezelab.widgets import _panel

    for module in (_labels, _progress, _explorer_choices, _panel):
        assert all(hasattr(module, name) for name in module.__all__), module.__name__
