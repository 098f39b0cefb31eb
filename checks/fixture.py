"""The ``compress_budget`` fixture object: measure a baseline and a candidate, judge them.

    def test_int8_model_fits_the_budget(compress_budget):
        model, split = squeezelab.default_model("cnn")
        int8 = squeezelab.compress(model, squeezelab.Recipe(runtime=squeezelab.Int8Static()), ...)
        compress_budget.check(model, int8, data=split.test)

Baseline and candidate may be PyTorch models, ``Compressed`` results or
``Metrics``. Models and results are measured together by the engine (paired
accuracy with its confidence interval, interleaved latency); two ``Metrics``
measured elsewhere are compared as given (point accuracy, latency ratio of
separate runs, no intervals: only the default ``accuracy_gate = "measured"``
can judge them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from squeezelab.checks.budget import Budget, BudgetError
from squeezelab.checks.verdict import Verdict, judge
from squeezelab.engine.errors import DataError, SqueezeError
from squeezelab.engine.metrics import Metrics, top1_accuracy
from squeezelab.engine.paired import PairedMetrics, measure_pair

__all__ = ["BudgetGate", "pair_from_metrics"]


def pair_from_metrics(baseline: Metrics, candidate: Metrics) -> PairedMetrics:
    """A ``PairedMetrics`` from two separately measured ``Metrics`` (no paired statistics)."""
    drop = None
    if baseline.accuracy is not None and candidate.accuracy is not None:
        drop = baseline.accuracy - candidate.accuracy
    return PairedMetrics(
        baseline=baseline,
        candidate=candidate,
        n_samples=min(baseline.n_samples, candidate.n_samples),
        accuracy_drop=drop,
        drop_interval=None,
        discordant=None,
        # Separate runs, not interleaved; judge() refuses to gate speed on non-positive latencies.
        speedup=baseline.latency_ms / candidate.latency_ms if candidate.latency_ms > 0 else float("nan"),
        speedup_interval=None,
        latency_rounds=min(baseline.latency_repeats, candidate.latency_repeats),
    )


def _label(model: Any) -> str:
    """How a baseline or candidate is named in messages."""
    from torch import nn

    if isinstance(model, nn.Module):
        return f"{type(model).__name__} (fp32 ONNX)"
    return model.label if isinstance(model, Metrics) else model.recipe.label


def _check_metric(budget: Budget, metric: Callable) -> None:
    """Before measuring: a "lenient" / "strict" accuracy gate needs per-sample outcomes (top-1 today)."""
    gated = budget.max_accuracy_drop is not None or budget.max_relative_accuracy_drop is not None
    if gated and budget.accuracy_gate != "measured" and metric is not top1_accuracy:
        name = getattr(metric, "__name__", type(metric).__name__)
        raise DataError(
            f"accuracy_gate = {budget.accuracy_gate!r} judges the confidence interval of the paired drop, "
            f"which needs per-sample outcomes; metric {name!r} returns one number. Use the default top-1 "
            "metric, or accuracy_gate = \"measured\"."
        )


class BudgetGate:
    """What the ``compress_budget`` fixture returns."""

    def __init__(
        self,
        budgets: dict[str, Budget],
        *,
        name: str | None,
        overrides: dict[str, Any],
        record: Callable[[Verdict], None],
    ) -> None:
        self._budgets = budgets
        self._name = name or "default"
        self._overrides = overrides
        self._record = record

    def budget_for(self, name: str | None = None) -> Budget:
        """The budget in force: the named (or default) one with the marker's overrides."""
        name = name or self._name
        if name not in self._budgets:
            raise BudgetError(
                f"no budget named {name!r}; defined: {', '.join(sorted(self._budgets))}. "
                f"Add [tool.squeezelab.budget.{name}] to the budget file."
            )
        return self._budgets[name].replace("@pytest.mark.compress_budget", **self._overrides)

    @property
    def budget(self) -> Budget:
        return self.budget_for()

    def check(
        self,
        baseline: Any,
        candidate: Any,
        data: Any = None,
        *,
        name: str | None = None,
        metric: Callable = top1_accuracy,
        example_inputs: Any = None,
    ) -> Verdict:
        """Measure both the same way, judge the candidate, fail the test if the budget is broken."""
        try:
            verdict = self._measure_and_judge(baseline, candidate, data, name, metric, example_inputs)
        except SqueezeError as exc:  # bad input: a clear failure, not a traceback from the plugin
            pytest.fail(f"compress budget check could not run: {exc}", pytrace=False)
        self._record(verdict)
        if not verdict.passed:
            pytest.fail(verdict.failure_message(), pytrace=False)
        return verdict

    def _measure_and_judge(
        self, baseline: Any, candidate: Any, data: Any, name: str | None, metric: Callable, example_inputs: Any
    ) -> Verdict:
        budget = self.budget_for(name)
        if isinstance(baseline, Metrics) and isinstance(candidate, Metrics):
            pair = pair_from_metrics(baseline, candidate)
        elif isinstance(baseline, Metrics) or isinstance(candidate, Metrics):
            raise BudgetError(
                "pass baseline and candidate both as Metrics, or both as models / Compressed results "
                "(then they are measured together)."
            )
        else:
            _check_metric(budget, metric)
            pair = measure_pair(
                baseline,
                candidate,
                data,
                metric=metric,
                example_inputs=example_inputs,
                batch_size=budget.latency_batch_size,
                repeats=budget.latency_rounds,
                threads=budget.threads,
                confidence=budget.confidence,
            )
        return judge(pair, budget, budget_name=name or self._name, labels=(_label(baseline), _label(candidate)))
