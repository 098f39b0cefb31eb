"""What the explorer shows while a point is measured: the stage, how far, and one overall fraction.

``Evaluator.evaluate(recipe, progress=hook)`` calls ``hook(stage, fraction)``
with the stages ``"compressing"`` (at its start), ``"evaluating"`` (after each
evaluation batch) and ``"timing"`` (after each interleaved timing round).
``StageProgress`` turns those calls into the words of the status line and the
value of one progress bar that only moves forward across the three stages.

The bar's split between stages is a fixed guess (compressing is usually the
longest step on a real model: export, quantization, calibration), not a
measured time: the words say which stage runs, the bar says that it moves.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["StageProgress", "STAGES"]

STAGES = ("compressing", "evaluating", "timing")
# (start, width) of each stage on the overall bar.
_SPANS = {"compressing": (0.0, 0.4), "evaluating": (0.4, 0.3), "timing": (0.7, 0.3)}
_SPANS_UNTIMED = {"compressing": (0.0, 0.5), "evaluating": (0.5, 0.5)}


@dataclass(frozen=True)
class StageProgress:
    """Words and bar position for one uncached point.

    Args:
        samples: how many samples the metric is evaluated on.
        rounds: timed rounds per point (0: the point is not timed).
        metric: the metric's name, for the evaluating stage.

    Examples:
        >>> p = StageProgress(samples=64, rounds=20, metric="cosine to fp32")
        >>> p.text("timing", 0.35), p.fraction("timing", 0.35)
        ('timing: round 7 of 20, interleaved with the fp32 baseline', 0.805)
        >>> p.text("evaluating", 0.5)
        'evaluating cosine to fp32: 32 of 64 samples'
    """

    samples: int
    rounds: int
    metric: str

    def fraction(self, stage: str, fraction: float) -> float:
        """The overall bar position in [0, 1] for ``fraction`` of ``stage`` done."""
        spans = _SPANS if self.rounds else _SPANS_UNTIMED
        start, width = spans.get(stage, (0.0, 0.0))
        return round(min(1.0, max(0.0, start + width * min(1.0, max(0.0, float(fraction))))), 4)

    def text(self, stage: str, fraction: float, *, baseline: bool = False) -> str:
        """One line saying what runs now and how far it is (``baseline``: the fp32 baseline itself)."""
        if stage == "compressing":
            return "compressing (prune, quantize, export) …"
        if stage == "evaluating":
            done = min(self.samples, round(fraction * self.samples))
            return f"evaluating {self.metric}: {done:,} of {self.samples:,} samples"
        if stage == "timing":
            done = min(self.rounds, round(fraction * self.rounds))
            return f"timing: round {done} of {self.rounds}" + ("" if baseline else ", interleaved with the fp32 baseline")
        return f"{stage} …"
