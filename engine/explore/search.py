"""``search(model, data, max_accuracy_drop=...)``: per-layer widths and sparsities within an accuracy budget.

The quantize → fine-tune → evaluate → repeat loop, automated as a greedy
descent planned by per-layer sensitivity (as HAQ/HAWQ-style allocators do,
without the training of a policy):

1. measure every layer's sensitivity (``layer_sensitivity``, cached);
2. start from the gentlest setting (8 bits, dense, or all channels kept);
3. repeatedly take the move with the best estimated gain per unit of
   sensitivity — one layer one step narrower, or one step sparser — measure
   the whole model with it, and keep it if the measured accuracy drop is
   within the budget; a move that breaks the budget is, when ``train_data`` is
   given, retried after a short fine-tune of the pruned model, and otherwise
   set aside (it gets one more try once other moves have been kept);
4. stop when no move is left or ``time_budget_s`` is spent.

It always returns a result: the best recipe measured within the budget (at
worst the fp32 baseline itself), its figures, the trail of everything tried,
and why it stopped. Nothing is ever presented that was not measured.

Objectives: ``"size"`` (simulated mixed-precision weights, pruned, in the
Deep-Compression file whose real byte count is the size) and ``"latency"``
(channels physically removed per group of coupled layers, attention heads per
attention module, run in ONNX Runtime: a real speedup).

What it may choose and what it is held to are one ``SearchConfig`` (``search_setup``), passed whole or
as keywords (``search(model, data, objective="latency")``), as ``finetune`` takes ``Training``.

``search`` itself only checks its arguments, measures the baseline, runs the
strategy for the objective and runtime (``search_strategies``: the descent
above is ``greedy_descent``; the int8 runtimes' is ``int8_search``) and
assembles the ``SearchResult`` (``search_result``).
"""

from __future__ import annotations

import time
from typing import Any

from torch import nn

from squeezelab.engine.core.errors import ConfigError
from squeezelab.engine.explore.evaluation import Evaluator, check_calibration, evaluator_settings
from squeezelab.engine.explore.overrides import with_overrides
from squeezelab.engine.explore.search_result import SearchResult, _row
from squeezelab.engine.explore.search_setup import SearchConfig, goal_of, space_of
from squeezelab.engine.explore.search_strategies import strategy_for
from squeezelab.engine.measurement.point import Settings
from squeezelab.engine.measurement.stats import min_rounds

__all__ = ["search", "SearchConfig"]


def search(
    model: nn.Module,
    data: Any,
    settings: Settings | None = None,
    *,
    config: SearchConfig | None = None,
    train_data: Any = None,
    validation_data: Any = None,
    calibration_data: Any = None,
    cache: Any = True,
    progress: bool = True,
    **overrides: Any,
) -> SearchResult:
    """Choose per-layer bit widths and sparsities that minimise the objective within the accuracy budget.

    Args:
        model: the PyTorch model (never changed).
        data: the data every decision is measured on (keep a separate test set for the final check).
        settings: how to measure (``Settings``; default ``Settings.for_sweeps()``), the argument after the data,
            as in ``measure``. A size search is never timed (its points take 0 rounds, whatever the settings
            say); a latency search times every point with the settings' rounds, and refuses ``rounds=0``.
        config: what may be chosen and the budget (``SearchConfig``: ``max_accuracy_drop`` 0.01, ``objective``
            ``"size"``, ``time_budget_s`` 120, ``bits``, ``sparsity``, ``quantization``, ``runtime``,
            ``finetune_epochs``, ``confidence`` 0.9, ``seed``); None: ``SearchConfig()``. The runtime decides
            the strategy: None searches a simulated quantizer (size) or channel pruning in ONNX Runtime
            (latency); ``Int8Dynamic()`` or ``Int8Static()``: real int8 with the sensitive layers kept float
            (``bits``, ``sparsity`` and ``quantization`` do not apply; see ``engine.explore.int8_search``).
            ``WeightOnly(...)`` with ``objective="latency"`` (channel pruning, then 4/8-bit weights), or with
            ``objective="size"``: the rounding method (GPTQ with ``calibration_data``, HQQ, round to nearest) at
            the asked block, then smaller blocks, then 8 bits (``engine.explore.weight_only_search``).
            The int8 runtimes try their fidelity steps and calibrations first (``details["algorithms"]``).
        train_data: enables fine-tuning (objective ``"size"``, a simulated quantizer): a sparsity step that breaks
            the budget is retried after ``finetune_epochs`` of training of the pruned model (masks
            kept); the result's ``model`` is then the fine-tuned copy the recipe applies to. The other
            strategies do not fine-tune and refuse it (``ConfigError``) rather than ignore it.
        validation_data: measure the final recipe on it as well (``held_out``), calibrated as the search was.
        calibration_data: inputs that calibrate ``Int8Static``, kept apart from ``data`` so the search does
            not judge int8 on the very inputs it calibrated on; ``runtime=Int8Static()`` without them raises
            ``CalibrationError`` before any work.
        cache: as for ``sweep``; every evaluation is cached, so a repeated search is fast.
        progress: show a progress bar.
        **overrides: any ``SearchConfig`` field (``max_accuracy_drop=0.02``, ``objective="latency"``, ...),
            applied on top of ``config``, or any ``Settings`` field (``metric=``: any per-sample metric,
            ``cosine_to_baseline`` for an embedding model); another keyword is a ``ConfigError`` naming both lists.
            ``confidence=`` is ``SearchConfig``'s (the one-sided bound a step is judged by); the two-sided
            confidence of the reported intervals is ``Settings``' and is passed in ``settings``.

    Examples:
        >>> import squeezelab as sl
        >>> from squeezelab.explore import SearchConfig
        >>> sl.search(None, None, config=SearchConfig(), objectve="latency")
        Traceback (most recent call last):
        ...
        squeezelab.engine.core.errors.ConfigError: search got unknown keyword(s) ['objectve']: SearchConfig's fields are [...].
    """
    config, measuring = with_overrides("search", SearchConfig, config, overrides, keyword="config",
                                        given_as_settings=settings)
    goal = goal_of(config, progress)
    strategy = strategy_for(model, space_of(config, train_data))
    check_calibration(config.runtime, calibration_data)  # static int8 without calibration_data: refused before any work
    if not strategy.timed:  # size is judged without timing: no rounds, whatever the settings say
        measuring = {**measuring, "rounds": 0}
    measured = evaluator_settings(settings, measuring)  # a bad setting fails here, before the cache is touched
    if strategy.timed and measured.rounds == 0:  # (fewer than min_rounds give a median speedup, without interval)
        raise ConfigError(
            f"objective='latency' ranks points by their measured speedup; rounds=0 times nothing. Leave rounds= out "
            f"(Settings.for_sweeps(): {Settings.for_sweeps().rounds}) or pass at least {min_rounds(measured.confidence)} "
            "for an interval."
        )
    ev = Evaluator(model, data, measured, calibration_data=calibration_data, cache=cache)
    baseline = ev.baseline()
    found = strategy.run(ev, baseline, goal)
    return found.with_context(
        elapsed_s=time.monotonic() - goal.clock.started,
        baseline=_row(baseline, baseline, "fp32 baseline"),
        held_out=None if validation_data is None else _held_out(model, validation_data, ev, found),
    )


def _held_out(model: nn.Module, validation_data: Any, ev: Evaluator, found: SearchResult) -> dict[str, Any]:
    """The found recipe measured on ``validation_data``, its drop against the caller's model on the same data."""
    base_ev = Evaluator(model, validation_data, ev.settings, calibration_data=ev.calibration, cache=ev.cache)
    check = base_ev.for_model(found.model)
    return _row(check.evaluate(found.recipe), base_ev.baseline(), "held out")
