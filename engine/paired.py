"""A baseline and a candidate measured together: paired accuracy, interleaved latency.

Comparing two accuracies measured separately is noisy; comparing them sample
by sample is not. ``measure_pair`` evaluates both models on the same samples,
keeps the per-sample outcomes, and reports the accuracy drop (the mean of
``correct_base_i - correct_cand_i``) with its confidence interval
(``squeezelab.engine.stats.paired_drop_interval``: exact on the discordant
samples). Latency is timed in the same interleaved rounds; the speedup is the
median of per-round ratios, with its interval and reading
(``stats.ratio_interval``).

Examples:
    >>> import squeezelab as sl
    >>> model, split = sl.default_model("mlp")
    >>> int8 = sl.compress(model, sl.Recipe(runtime=sl.Int8Dynamic()), example_inputs=split.x_test[:1])
    >>> pair = measure_pair(model, int8, split.test, repeats=3)
    >>> pair.n_samples, pair.baseline.label, pair.candidate.label
    (450, 'fp32', 'int8-dynamic')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from squeezelab.engine.compressed import Compressed
from squeezelab.engine.errors import DataError
from squeezelab.engine.metrics import (
    Metric,
    Metrics,
    as_compressed,
    check_settings,
    metrics_of,
    predictions,
    time_together,
    top1_accuracy,
    top1_correct,
)
from squeezelab.engine.stats import (
    DropInterval,
    RatioInterval,
    check_confidence,
    paired_drop_interval,
    ratio_interval,
)

__all__ = ["PairedMetrics", "measure_pair"]


@dataclass(frozen=True, kw_only=True)
class PairedMetrics:
    """Baseline and candidate measured side by side on the same samples and rounds.

    Attributes:
        accuracy_drop: baseline minus candidate accuracy, as measured (negative: the candidate is better).
        drop_interval: that drop with its two-sided confidence interval, paired by sample;
            ``None`` when the metric is not per-sample (a custom ``metric=``) or the two
            were measured separately.
        discordant: ``(baseline right & candidate wrong, the reverse)`` for top-1 accuracy.
        speedup: median of per-round ratios baseline / candidate latency.
        speedup_interval: that median with its interval and reading ("faster", "slower",
            "about the same"); ``None`` when the two were not timed in the same rounds.
    """

    baseline: Metrics
    candidate: Metrics
    n_samples: int
    accuracy_drop: float | None
    drop_interval: DropInterval | None
    discordant: tuple[int, int] | None
    speedup: float
    speedup_interval: RatioInterval | None
    latency_rounds: int

    @property
    def relative_accuracy_drop(self) -> float | None:
        base = self.baseline.accuracy
        if self.accuracy_drop is None or not base:
            return None
        return self.accuracy_drop / base


def measure_pair(
    baseline: nn.Module | Compressed,
    candidate: nn.Module | Compressed,
    data: Any = None,
    *,
    metric: Metric = top1_accuracy,
    example_inputs: Any = None,
    batch_size: int = 1,
    repeats: int = 30,
    warmup: int = 5,
    threads: int | None = 1,
    confidence: float = 0.95,
) -> PairedMetrics:
    """Measure ``baseline`` and ``candidate`` the same way, together.

    PyTorch models are measured as their fp32 ONNX export, as ``measure`` does.
    With the default top-1 metric the accuracy drop comes with its paired
    interval at ``confidence`` (two-sided); any other ``metric`` gives the
    point difference only.
    """
    check_settings(batch_size=batch_size, repeats=repeats, warmup=warmup, threads=threads)
    check_confidence(confidence)
    pair = [as_compressed(m, data, example_inputs) for m in (baseline, candidate)]
    accuracies: list[float | None] = [None, None]
    n = 0
    drop = interval = discordant = None
    if data is not None:
        (pb, tb), (pc, tc) = (predictions(c, data) for c in pair)
        if not np.array_equal(tb, tc):
            raise DataError("the data gave different targets on two passes; pass data that iterates deterministically.")
        n = len(tb)
        if metric is top1_accuracy:
            cb, cc = top1_correct(pb, tb), top1_correct(pc, tc)
            accuracies = [float(cb.mean()), float(cc.mean())]
            interval = paired_drop_interval(cb, cc, confidence)
            drop, discordant = interval.drop, interval.discordant
        else:
            accuracies = [float(metric(pb, tb)), float(metric(pc, tc))]
            drop = accuracies[0] - accuracies[1]
    samples = time_together(pair, batch_size=batch_size, data=data, repeats=repeats, warmup=warmup, threads=threads)
    speed = ratio_interval(samples[0], samples[1])
    base_m, cand_m = (
        metrics_of(c, accuracy=a, metric=metric, n_samples=n, samples=s, batch_size=batch_size, threads=threads)
        for c, a, s in zip(pair, accuracies, samples)
    )
    return PairedMetrics(
        baseline=base_m,
        candidate=cand_m,
        n_samples=n,
        accuracy_drop=drop,
        drop_interval=interval,
        discordant=discordant,
        speedup=speed.median,
        speedup_interval=speed,
        latency_rounds=repeats,
    )
