"""The ``compress_budget`` fixture object: measure a baseline and a candidate, judge them.

    def test_int8_model_fits_the_budget(compress_budget):
        model, split = squeezelab.models.default_model("cnn")
        int8 = squeezelab.compress(model, squeezelab.Recipe(runtime=squeezelab.Int8Static()), ...)
        compress_budget.check(model, int8, data=split.test)

Baseline and candidate may be PyTorch models, ONNX files, ``Compressed``
results or ``Point``s. Models, files and results are measured together by the
engine (the metric's per-sample scores paired with their confidence interval,
interleaved latency; see ``checks.pairing``); two ``Point``s measured elsewhere
are compared as given (point drop, latency ratio of separate runs, no
intervals: only the default ``accuracy_gate = "measured"`` can judge them).

Data is any form ``read_samples`` takes: ``(inputs, targets)`` with targets any
array, or ``(inputs, None)``; without targets the metric compares with the
uncompressed model's outputs (``cosine_to_baseline`` unless ``metric=`` says
otherwise). Every figure is named after the metric measured.

With saved results to compare with (``--compress-budget-compare``), the regression limits
(``checks.regression``) are judged too and their figures join the verdict; every check's record (its
two ``Point`` rows, the data's fingerprint) goes to the recorder, which saves them
(``--compress-budget-save``). A PyTorch baseline's export and outputs come from the baseline cache
when it holds them.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import pytest

from squeezelab.checks.baseline_cache import BaselineCache
from squeezelab.checks.budget import REGRESSION_KEYS, Budget, BudgetError, gating_keys
from squeezelab.checks.history import SavedResults
from squeezelab.checks.pairing import measured_pair, points_pair, settings_for, side_label
from squeezelab.checks.regression import regression_figures
from squeezelab.checks.verdict import Verdict, judge
from squeezelab.engine.core.errors import SqueezeError
from squeezelab.engine.core.fingerprints import data_fingerprint
from squeezelab.engine.core.samples import read_samples
from squeezelab.engine.measurement.paired import PairedMetrics
from squeezelab.engine.measurement.point import Point, Settings

__all__ = ["BudgetGate", "CompressBudgetWarning", "GateRun", "gate_record", "with_regressions"]


class CompressBudgetWarning(UserWarning):
    """A gate limit that was not judged (another CPU for speed, no saved result), with the reason."""


@dataclasses.dataclass(frozen=True)
class GateRun:
    """What one check measured and judged, beside its verdict: for the saved results and the summary."""

    verdict: Verdict
    pair: PairedMetrics
    data_fingerprint: str | None
    baseline_cache: str


def gate_record(key: str, test: str, run: GateRun) -> dict[str, Any]:
    """One gate's entry in the saved results (``checks.history``): both Points' rows (scores packed), fingerprint, clock."""
    return {
        "key": key,
        "test": test,
        "budget_name": run.verdict.budget_name,
        "passed": run.verdict.passed,
        "figures": [dataclasses.asdict(f) for f in run.verdict.figures],
        "recipe": run.pair.candidate.recipe,
        "baseline": run.pair.baseline.to_row(),
        "candidate": run.pair.candidate.to_row(),
        "data_fingerprint": run.data_fingerprint,
        "timing": run.pair.candidate.details.get("timing"),
        "baseline_cache": run.baseline_cache,
    }


def with_regressions(run: GateRun, saved: SavedResults | None, key: str, budget: Budget) -> Verdict:
    """``run``'s verdict with the regression figures against ``saved`` (and the limits not judged, with why)."""
    asked = [k for k in REGRESSION_KEYS if getattr(budget, k) is not None]
    if not asked:
        return run.verdict
    if saved is None:
        reason = (f"{', '.join(asked)}: no saved run to compare with (pytest --compress-budget-compare=PATH, "
                  "squeezelab gate --compare PATH)")
        return dataclasses.replace(run.verdict, not_judged=(*run.verdict.not_judged, reason))
    figures, not_judged = regression_figures(saved, key, run.pair, run.data_fingerprint, budget)
    return dataclasses.replace(run.verdict, figures=(*run.verdict.figures, *figures),
                               not_judged=(*run.verdict.not_judged, *not_judged))


class BudgetGate:
    """What the ``compress_budget`` fixture returns."""

    def __init__(
        self,
        budgets: dict[str, Budget],
        *,
        name: str | None,
        overrides: dict[str, Any],
        record: Callable[[GateRun, str], None],
        key: str = "check",
        compare: SavedResults | None = None,
        cache: BaselineCache | None = None,
    ) -> None:
        self._budgets = budgets
        self._name = name or "default"
        self._overrides = overrides
        self._record = record
        self._key = key
        self._compare = compare
        self._cache = cache
        self._checks = 0

    def budget_for(self, name: str | None = None) -> Budget:
        """The budget in force: the named (or default) one with the marker's overrides."""
        name = name or self._name
        if name not in self._budgets:
            raise BudgetError(
                f"no budget named {name!r}; defined: {', '.join(sorted(self._budgets))}. "
                f"Add [tool.squeezelab.budget.{name}] to the budget file."
            )
        budget = self._budgets[name].replace("@pytest.mark.compress_budget", **self._overrides)
        if not budget.gates():  # e.g. a marker that set the only limit to None: every check would pass
            raise BudgetError(
                f"budget {name!r} with the marker's overrides {self._overrides!r} gates nothing, so the check "
                f"would pass whatever it measured; keep at least one limit: {gating_keys()}."
            )
        if self._compare is None and set(budget.gates()) <= set(REGRESSION_KEYS):
            raise BudgetError(
                f"budget {name!r} sets only limits against a saved run ({', '.join(budget.gates())}) and no saved run "
                "was given, so the check would judge nothing: pass --compress-budget-compare=PATH, or add a limit "
                f"of this run: {gating_keys()}."
            )
        return budget

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
        metric: Any = None,
        output: Any = None,
        example_inputs: Any = None,
        settings: Settings | None = None,
    ) -> Verdict:
        """Measure both the same way, judge the candidate, fail the test if the budget is broken.

        Args:
            baseline, candidate: PyTorch models, ONNX files (paths), ``Compressed`` results, or
                two ``Point``s.
            data: ``(inputs, targets)`` in any form ``read_samples`` takes; ``(inputs, None)``
                compares with the uncompressed model's outputs. Needed to gate a drop.
            name: the budget to use (default: the marker's, else ``"default"``).
            metric: a ``Metric``, a callable, or a name in ``engine.scoring.METRICS``; ``None``:
                top-1 accuracy with targets, ``cosine_to_baseline`` without.
            output: which model output is evaluated (a key such as ``"pooler_output"``, an index,
                or a callable); ``None``: the one the ``Compressed`` results were made with, else
                the first tensor.
            example_inputs: for PyTorch models when ``data`` is None.
            settings: a ``Settings`` for the rest (warm-up, evaluation batch size); the budget
                decides the latency batch size, rounds, threads and confidence.
        """
        self._checks += 1  # a test's later checks are saved and compared under their own keys
        key = self._key if self._checks == 1 else f"{self._key} #{self._checks}"
        try:
            run = self._measure_and_judge(baseline, candidate, data, name, metric, output, example_inputs, settings)
            verdict = with_regressions(run, self._compare, key, self.budget_for(name))
        except SqueezeError as exc:  # bad input: a clear failure, not a traceback from the plugin
            problem = str(exc)
        else:
            problem = None
        if problem is not None:  # failed outside the handler, so the message is not shown twice (chained)
            pytest.fail(f"compress budget check could not run: {problem}", pytrace=False)
        self._record(dataclasses.replace(run, verdict=verdict), key)
        for reason in verdict.not_judged:
            warnings.warn(CompressBudgetWarning(f"compress budget {verdict.budget_name!r}: not judged: {reason}"), stacklevel=2)
        if not verdict.passed:
            pytest.fail(verdict.failure_message(), pytrace=False)
        return verdict

    def _measure_and_judge(
        self, baseline: Any, candidate: Any, data: Any, name: str | None, metric: Any, output: Any,
        example_inputs: Any, settings: Settings | None,
    ) -> GateRun:
        budget = self.budget_for(name)
        fingerprint, status = None, "off"
        if isinstance(baseline, Point) and isinstance(candidate, Point):
            given = {"data": data, "metric": metric, "output": output, "example_inputs": example_inputs, "settings": settings}
            ignored = [key for key, value in given.items() if value is not None]
            if ignored:  # they would change nothing: Points are already measured
                raise BudgetError(
                    f"{', '.join(f'{k}=' for k in ignored)} given with two Points, which are judged as measured; "
                    "leave it out, or pass the models, ONNX files or Compressed results to measure them with it."
                )
            pair, status = points_pair(baseline, candidate, budget), "not cached (two Points: nothing measured)"
        elif isinstance(baseline, Point) or isinstance(candidate, Point):
            raise BudgetError(
                "pass baseline and candidate both as Points, or both as models, ONNX files or Compressed "
                "results (then they are measured together)."
            )
        else:
            chosen = settings_for(budget, settings, metric=metric, output=output)
            samples = None if data is None else read_samples(data)  # read once: data may be a one-pass iterable
            pair, status = measured_pair(baseline, candidate, samples, chosen, budget, example_inputs, self._cache)
            fingerprint = None if samples is None else data_fingerprint(samples)
        labels = (side_label(baseline), side_label(candidate))
        verdict = judge(pair, budget, budget_name=name or self._name, labels=labels)
        return GateRun(verdict, pair, fingerprint, status)
