"""A baseline and a candidate measured together: paired scores, interleaved latency.

Comparing two figures measured separately is noisy; comparing them sample by
sample is not. ``measure_pair`` evaluates both models on the same samples,
keeps their per-sample scores, and gives the candidate's drop (the mean of
``score_base_i - score_cand_i``) with its confidence interval
(``squeezelab.engine.measurement.stats.paired_drop_interval``: exact on the discordant
samples for 0/1 scores such as top-1 correctness, a t-interval for continuous
scores such as cosine). Latency is timed in the same interleaved rounds; the
speedup is the median of per-round ratios, with its interval and reading
(``stats.ratio_interval``). For a metric that compares with the uncompressed
model's outputs (fidelity), the baseline's own outputs are the reference.

Examples:
    >>> import squeezelab as sl
    >>> model, split = sl.models.default_model("mlp")
    >>> int8 = sl.compress(model, sl.Recipe(runtime=sl.Int8Dynamic()), example_inputs=split.x_test[:1])
    >>> pair = measure_pair(model, int8, split.test, rounds=3)
    >>> pair.n_samples, pair.baseline.label, pair.candidate.label
    (450, 'fp32', 'int8-dynamic')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from squeezelab.engine.measurement.metrics import as_compressed, outputs_of, point_of, scores_of, settings_of, time_together
from squeezelab.engine.measurement.point import Point, Settings
from squeezelab.engine.core.errors import DataError
from squeezelab.engine.core.samples import read_samples
from squeezelab.engine.measurement.stats import DropInterval, RatioInterval, paired_drop_interval, ratio_interval

__all__ = ["PairedMetrics", "measure_pair"]


@dataclass(frozen=True)
class PairedMetrics:
    """Baseline and candidate measured side by side on the same samples and rounds.

    ``candidate.drop`` and ``candidate.speedup`` hold the paired figures; the
    properties below read them.
    """

    baseline: Point
    candidate: Point

    @property
    def n_samples(self) -> int:
        return self.candidate.n_samples

    @property
    def drop_interval(self) -> DropInterval | None:
        """The drop with its two-sided interval (``None``: a scalar-only metric, or figures measured apart)."""
        return self.candidate.drop

    @property
    def accuracy_drop(self) -> float | None:
        """Baseline minus candidate value of the metric, as measured (negative: the candidate is better)."""
        if self.candidate.drop is not None:
            return self.candidate.drop.drop
        if self.baseline.value is None or self.candidate.value is None:
            return None
        return self.baseline.value - self.candidate.value

    @property
    def discordant(self) -> tuple[int, int] | None:
        return None if self.candidate.drop is None else self.candidate.drop.discordant

    @property
    def speedup_interval(self) -> RatioInterval | None:
        return self.candidate.speedup

    @property
    def speedup(self) -> float:
        """Median of per-round ratios baseline / candidate latency (NaN when not timed)."""
        if self.candidate.speedup is not None:
            return self.candidate.speedup.median
        b, c = self.baseline.latency_ms, self.candidate.latency_ms
        return b / c if b and c else float("nan")

    @property
    def latency_rounds(self) -> int:
        return self.candidate.latency_rounds

    @property
    def relative_accuracy_drop(self) -> float | None:
        base, drop = self.baseline.value, self.accuracy_drop
        if drop is None or not base:
            return None
        return drop / base


def measure_pair(
    baseline: Any,
    candidate: Any,
    data: Any = None,
    settings: Settings | None = None,
    *,
    example_inputs: Any = None,
    baseline_outputs: Any = None,
    **overrides: Any,
) -> PairedMetrics:
    """Measure ``baseline`` and ``candidate`` the same way, together.

    PyTorch models and ONNX files are measured as their fp32 ONNX model, as
    ``measure`` does. ``settings`` (or keyword overrides such as ``metric=``,
    ``rounds=``, ``confidence=``) say how. ``baseline_outputs``: the baseline's
    selected output on every sample of ``data``, when already known (the budget
    gate's baseline cache); it is used instead of running the baseline again.
    """
    settings = settings_of(settings, overrides)
    samples = None if data is None else read_samples(data)
    metric = settings.resolved_metric(has_targets=samples is not None and samples.targets is not None)
    pair = [as_compressed(m, samples, example_inputs, settings.output) for m in (baseline, candidate)]
    values: list[Any] = [None, None]
    scores: list[Any] = [None, None]
    drop = None
    if samples is not None:
        if baseline_outputs is not None and len(baseline_outputs) != len(samples):
            raise DataError(f"baseline_outputs has {len(baseline_outputs)} rows for {len(samples)} samples; pass the "
                            "baseline's outputs on exactly these samples, or leave it out.")
        outputs = [outputs_of(pair[0], samples, settings.eval_batch_size) if baseline_outputs is None else baseline_outputs,
                   outputs_of(pair[1], samples, settings.eval_batch_size)]
        reference = outputs[0] if metric.reference == "baseline" else None
        (values[0], scores[0]), (values[1], scores[1]) = (scores_of(metric, o, samples, reference) for o in outputs)
        if scores[0] is not None and scores[1] is not None:
            drop = paired_drop_interval(scores[0], scores[1], settings.confidence)
    timed = time_together(pair, settings, samples) if settings.rounds else [None, None]
    n = 0 if samples is None else len(samples)
    base_p, cand_p = (
        point_of(c, metric=metric, value=v, scores=s, n_samples=n, latency=t, settings=settings)
        for c, v, s, t in zip(pair, values, scores, timed)
    )
    speed = ratio_interval(timed[0], timed[1], confidence=settings.confidence) if settings.rounds else None
    return PairedMetrics(baseline=base_p, candidate=cand_p.with_baseline(drop, speed))
