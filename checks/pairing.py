"""What the budget fixture judges: a baseline and a candidate measured together, or two Points as given.

- Models, ONNX files and ``Compressed`` results are measured together by the engine
  (``measure_pair``): the same samples, per-sample scores of the metric, the paired drop
  with its interval, latency in interleaved rounds. The budget decides the latency batch
  size, rounds, threads and the interval's confidence; ``Settings`` (or ``metric=`` /
  ``output=``) decide the rest. Timing runs only when a speed gate is set.
- Two ``Point``s are compared as given (point comparison, latency ratio of separate runs),
  unless the candidate was measured against exactly this baseline on the same samples (a
  ``measure_pair`` or sweep result): then its recorded pairing is used.
- A PyTorch baseline's fp32 export and outputs on the data come from the ``BaselineCache``
  when it holds them (``checks.baseline_cache``): a repeated gate skips that work.

Every refusal here happens before a model is exported or run.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from torch import nn

from squeezelab.checks.baseline_cache import BaselineCache
from squeezelab.checks.budget import Budget, BudgetError
from squeezelab.engine.pipeline.compressed import Compressed
from squeezelab.engine.core.errors import DataError
from squeezelab.engine.core.outputs import selector_name
from squeezelab.engine.measurement.paired import PairedMetrics, measure_pair
from squeezelab.engine.measurement.point import Point, Settings
from squeezelab.engine.core.samples import read_samples
from squeezelab.engine.measurement.scoring import kl_to_baseline, negative_mse
from squeezelab.engine.measurement.stats import paired_drop_interval

__all__ = ["BUDGET_SETTINGS", "settings_for", "measured_pair", "points_pair", "side_label"]

# Settings fields the budget decides, and the budget key that sets each.
BUDGET_SETTINGS = {"batch_size": "latency_batch_size", "rounds": "latency_rounds", "threads": "threads", "confidence": "confidence"}
# Built-in metrics whose values are <= 0 (higher is better): a drop relative to them means nothing.
_NON_POSITIVE = (negative_mse, kl_to_baseline)


def _drop_gated(budget: Budget) -> bool:
    return budget.max_accuracy_drop is not None or budget.max_relative_accuracy_drop is not None


def settings_for(budget: Budget, settings: Settings | None = None, *, metric: Any = None, output: Any = None) -> Settings:
    """The measurement settings of a check: ``settings`` (default ``Settings()``) with the budget's timing.

    Raises:
        BudgetError: ``settings`` is not a ``Settings``, or sets a field the budget decides
            (batch size, rounds, threads, confidence) to another value than the budget's.
    """
    if settings is not None and not isinstance(settings, Settings):
        raise BudgetError(
            f"settings={settings!r}; pass a squeezelab Settings(...) (metric, output, warmup, eval_batch_size) "
            "or leave it out."
        )
    base, defaults = settings or Settings(), Settings()
    for field, key in BUDGET_SETTINGS.items():
        given, wanted = getattr(base, field), getattr(budget, key)
        if given != getattr(defaults, field) and given != wanted:
            raise BudgetError(
                f"settings.{field}={given!r} differs from the budget's {key} = {wanted!r}; the budget decides how "
                f"the gate measures: set {key} in the budget (file or @pytest.mark.compress_budget({key}=...)) "
                f"and leave {field} out of settings."
            )
    # A speedup ratio against a saved run needs this run's speedup (and a saved run needs one to be compared later).
    timed = budget.min_speedup is not None or budget.max_latency_ms is not None or budget.min_speedup_ratio is not None
    changes: dict[str, Any] = {
        "batch_size": budget.latency_batch_size,
        "rounds": budget.latency_rounds if timed else 0,  # no speed gate: nothing to time
        "threads": budget.threads,
        "confidence": budget.confidence,
    }
    if metric is not None:
        changes["metric"] = metric
    if output is not None:
        changes["output"] = output
    return base.replace(**changes)


def _shown(output: Any) -> str:
    name = selector_name(output)
    return "None (the first tensor)" if name is None else repr(name)


def _same_output(settings: Settings, sides: dict[str, Any]) -> Settings:
    """The output both sides evaluate: ``output=`` as given, else the one the ``Compressed`` sides were made with."""
    made = {what: c for what, c in sides.items() if isinstance(c, Compressed)}
    names = {selector_name(c.output) for c in made.values()}
    if settings.output is None and len(names) > 1:
        said = ", ".join(f"the {what} {c.recipe.label} output={_shown(c.output)}" for what, c in made.items())
        raise DataError(f"baseline and candidate evaluate different outputs ({said}); compress both with the same output=.")
    if settings.output is None:
        chosen = next(iter(made.values())).output if made else None
        return settings if chosen is None else settings.replace(output=chosen)
    for what, c in made.items():
        if c.output is not settings.output and selector_name(c.output) != selector_name(settings.output):
            raise DataError(
                f"the {what} {c.recipe.label} was compressed with output={_shown(c.output)}, but the check evaluates "
                f"output={_shown(settings.output)}; compress it with output={_shown(settings.output)}, or pass "
                "the output it was made with to check(output=...)."
            )
    return settings


def measured_pair(
    baseline: Any, candidate: Any, data: Any, settings: Settings, budget: Budget, example_inputs: Any,
    cache: BaselineCache | None = None,
) -> tuple[PairedMetrics, str]:
    """Baseline and candidate (models, ONNX files or ``Compressed``) measured together; refusals first.

    Returns the pair and where the baseline's export and outputs came from: ``"hit"`` (``cache``
    held them: neither exported nor run over the data), ``"stored"`` (measured and cached),
    ``"off"`` (no cache), or ``"not cached (...)"`` saying why (only PyTorch baselines with data are).
    """
    if data is None and _drop_gated(budget):
        raise DataError(
            "the budget gates the drop of the measured metric (max_accuracy_drop / max_relative_accuracy_drop) "
            "but no data was given: pass data=(inputs, targets), or data=(inputs, None) to compare with the "
            "uncompressed model's outputs (cosine_to_baseline by default)."
        )
    samples = None if data is None else read_samples(data)
    settings = _same_output(settings, {"baseline": baseline, "candidate": candidate})
    if samples is not None:
        metric = settings.resolved_metric(has_targets=samples.targets is not None)  # refuses a metric the data cannot feed
        if budget.max_relative_accuracy_drop is not None and metric in _NON_POSITIVE:
            raise BudgetError(
                f"max_relative_accuracy_drop divides the drop by the baseline's {metric.name}, whose values are <= 0 "
                "(higher is better): a relative drop means nothing there. Gate max_accuracy_drop (absolute, in "
                "the metric's units) instead."
            )
    pair, status = _measured(baseline, candidate, samples, settings, example_inputs, cache)
    if _drop_gated(budget) and budget.accuracy_gate != "measured" and pair.candidate.drop is None:
        raise DataError(
            f"accuracy_gate = {budget.accuracy_gate!r} judges the confidence interval of the paired drop, which "
            f"needs per-sample scores; metric {pair.candidate.metric!r} returns one number. Return one score per "
            "sample (shape (N,)), or use accuracy_gate = \"measured\"."
        )
    return pair, status


def _measured(baseline: Any, candidate: Any, samples: Any, settings: Settings, example_inputs: Any,
              cache: BaselineCache | None) -> tuple[PairedMetrics, str]:
    """``measure_pair``, with the baseline's export and outputs from ``cache`` where it can hold them."""
    if cache is None or cache.root is None:
        return measure_pair(baseline, candidate, samples, settings, example_inputs=example_inputs), "off"
    if not isinstance(baseline, nn.Module) or samples is None:
        why = "no data" if samples is None else "the baseline is not a PyTorch model: nothing to export"
        return measure_pair(baseline, candidate, samples, settings, example_inputs=example_inputs), f"not cached ({why})"
    known = cache.baseline(baseline, samples, example_inputs, settings.output, settings.eval_batch_size)
    pair = measure_pair(known.compressed, candidate, samples, settings, example_inputs=example_inputs,
                        baseline_outputs=known.outputs)
    return pair, known.status


def _shared_drop(baseline: Point, candidate: Point, confidence: float) -> Any:
    """The paired drop when ``candidate`` was measured against ``baseline`` on the same samples, else None.

    The evidence: the candidate records a drop, and it is the mean of these two Points'
    per-sample score differences (a candidate paired with another baseline, or measured
    alone, fails it). The interval is recomputed from the scores at the budget's confidence.
    """
    b, c, drop = baseline.scores, candidate.scores, candidate.drop
    if drop is None or b is None or c is None or len(b) != len(c) or drop.n != len(c):
        return None
    if baseline.metric != candidate.metric or not math.isclose(float(np.mean(b - c)), drop.drop, rel_tol=1e-6, abs_tol=1e-7):
        return None
    return paired_drop_interval(b, c, confidence)


def points_pair(baseline: Point, candidate: Point, budget: Budget) -> PairedMetrics:
    """Two ``Point``s: paired where the candidate was measured against this baseline, else as given."""
    drop = _shared_drop(baseline, candidate, budget.confidence)
    speedup = candidate.speedup if drop is not None else None  # timed in the same rounds as that pairing
    return PairedMetrics(baseline=baseline, candidate=candidate.replace(drop=drop, speedup=speedup))


def side_label(model: Any) -> str:
    """How a baseline or candidate is named in messages."""
    if isinstance(model, nn.Module):
        return f"{type(model).__name__} (fp32 ONNX)"
    if isinstance(model, Point):
        return model.label
    if isinstance(model, Compressed):
        return model.recipe.label
    if isinstance(model, (str, Path)):
        return f"{Path(model).name} (ONNX file)"
    return "ONNX model"
