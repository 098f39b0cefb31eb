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

``search`` itself only checks its arguments, measures the baseline, runs the
strategy for the objective and runtime (``search_strategies``: the descent
above is ``greedy_descent``; the int8 runtimes' is ``int8_search``) and
assembles the ``SearchResult`` (``search_result``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from torch import nn

from squeezelab.engine.core.arguments import count, finite_number, grid_lists
from squeezelab.engine.core.errors import ConfigError
from squeezelab.engine.core.quantizers import QuantizationConfig
from squeezelab.engine.core.runtimes import Runtime
from squeezelab.engine.explore.evaluation import Evaluator, check_calibration
from squeezelab.engine.explore.search_result import Found, SearchResult, _row
from squeezelab.engine.explore.search_setup import SearchClock, SearchGoal, SearchSpace
from squeezelab.engine.explore.search_strategies import OBJECTIVES, strategy_for
from squeezelab.engine.explore.sweep import weight_quantizer
from squeezelab.engine.measurement.point import Settings

__all__ = ["search"]


def search(
    model: nn.Module,
    data: Any,
    *,
    max_accuracy_drop: float = 0.01,
    objective: str = "size",
    time_budget_s: float = 120.0,
    bits: int | Sequence[int] = (8, 6, 5, 4, 3, 2),
    sparsity: float | Sequence[float] = (0.0, 0.25, 0.5, 0.7, 0.8, 0.9),
    quantization: str | QuantizationConfig = "linear-symmetric",
    runtime: Runtime | None = None,
    train_data: Any = None,
    finetune_epochs: int = 1,
    validation_data: Any = None,
    calibration_data: Any = None,
    confidence: float = 0.9,
    settings: Settings | None = None,
    cache: Any = True,
    progress: bool = True,
    seed: int = 0,
    **overrides: Any,
) -> SearchResult:
    """Choose per-layer bit widths and sparsities that minimise ``objective`` within ``max_accuracy_drop``.

    Args:
        model: the PyTorch model (never changed).
        data: the data every decision is measured on (keep a separate test set for the final check).
        max_accuracy_drop: allowed drop of ``metric`` below the fp32 baseline (0.01 = 1 point),
            a finite number >= 0.
        objective: ``"size"`` (bytes of the compressed file) or ``"latency"`` (channel pruning, ORT).
        time_budget_s: wall-clock budget, finite and > 0; when spent, the best result so far is returned.
        bits, sparsity: the values each layer may take (``bits`` only for ``"size"``): one value
            or a non-empty list each.
        quantization: the weight quantizer whose width is chosen per layer.
        runtime: default ``Simulated(coding="huffman")`` for size, ``Onnx()`` for latency.
            ``Int8Dynamic()`` or ``Int8Static()``: real int8 with the sensitive layers kept float
            (``bits``, ``sparsity`` and ``quantization`` do not apply; see ``engine.explore.int8_search``).
            ``WeightOnly(...)`` with ``objective="latency"`` (channel pruning, then 4/8-bit weights), or with
            ``objective="size"``: the rounding method (GPTQ with ``calibration_data``, HQQ, round to nearest) at
            the asked block, then smaller blocks, then 8 bits (``engine.explore.weight_only_search``).
            The int8 runtimes try their fidelity steps and calibrations first (``details["algorithms"]``).
        train_data: enables fine-tuning (objective ``"size"``): a sparsity step that breaks the
            budget is retried after ``finetune_epochs`` of training of the pruned model (masks
            kept); the result's ``model`` is then the fine-tuned copy the recipe applies to.
        validation_data: measure the final recipe on it as well (``held_out``), calibrated as the search was.
        calibration_data: inputs that calibrate ``Int8Static``, kept apart from ``data`` so the search does
            not judge int8 on the very inputs it calibrated on; ``runtime=Int8Static()`` without them raises
            ``CalibrationError`` before any work.
        confidence: a step is kept only if the one-sided upper bound of its accuracy drop
            (paired by sample, at this confidence) is within budget, so the choice does not
            overfit the noise of ``data``; 0 judges the plain measured drop.
        settings: how to measure (``Settings``); keyword overrides such as ``metric=`` (any
            per-sample metric: ``cosine_to_baseline`` for an embedding model) change single fields.
        cache: as for ``sweep``; every evaluation is cached, so a repeated search is fast.
    """
    if objective not in OBJECTIVES:
        raise ConfigError(f"objective={objective!r}; use {' or '.join(map(repr, OBJECTIVES))}.")
    goal = _goal(max_accuracy_drop, confidence, time_budget_s, progress)
    space = _space(objective, runtime, bits, sparsity, quantization, train_data, finetune_epochs, seed)
    strategy = strategy_for(model, space)
    check_calibration(runtime, calibration_data)  # static int8 without calibration_data: refused before any work
    ev = Evaluator(model, data, settings, calibration_data=calibration_data, cache=cache,
                   **{**overrides, "rounds": strategy.rounds})
    baseline = ev.baseline()
    found = strategy.run(ev, baseline, goal)
    return SearchResult(
        recipe=found.recipe,
        model=found.model,
        row=found.row,
        trail=found.trail,
        stopped=found.stopped,
        elapsed_s=time.monotonic() - goal.clock.started,
        baseline=_row(baseline, baseline, "fp32 baseline"),
        held_out=None if validation_data is None else _held_out(model, validation_data, ev, found),
        point=found.row.get("point"),
        details=found.details,
    )


def _goal(max_accuracy_drop: Any, confidence: Any, time_budget_s: Any, progress: bool) -> SearchGoal:
    """The checked budget; its clock starts now."""
    max_accuracy_drop = finite_number("max_accuracy_drop", max_accuracy_drop, low=0, hint=" (0.01 = 1 point)")
    confidence = finite_number(
        "confidence", confidence, low=0, high=1, high_open=True, hint=" (0.9 = 90% one-sided bound; 0 = plain drop)"
    )
    time_budget_s = finite_number("time_budget_s", time_budget_s, low=0, low_open=True, hint=" seconds")
    return SearchGoal(max_accuracy_drop=max_accuracy_drop, confidence=confidence, clock=SearchClock(time_budget_s),
                      progress=progress)


def _space(
    objective: str, runtime: Runtime | None, bits: Any, sparsity: Any, quantization: str | QuantizationConfig,
    train_data: Any, finetune_epochs: Any, seed: int,
) -> SearchSpace:
    """The checked choices: widths widest first, sparsities lowest first, each value once."""
    finetune_epochs = count("finetune_epochs", finetune_epochs, low=1, hint=" (passes over train_data)")
    quantizer = weight_quantizer(quantization, width_based=True)
    bits, sparsity = grid_lists(bits, sparsity, layout="each")
    for b in bits:  # every width must suit the quantizer: refused now, not after the baseline ran
        quantizer.with_bits(b)
    return SearchSpace(
        objective=objective, runtime=runtime, bits=tuple(sorted(set(bits), reverse=True)),
        sparsity=tuple(sorted(set(sparsity))), quantizer=quantizer, train_data=train_data,
        finetune_epochs=finetune_epochs, seed=seed,
    )


def _held_out(model: nn.Module, validation_data: Any, ev: Evaluator, found: Found) -> dict[str, Any]:
    """The found recipe measured on ``validation_data``, its drop against the caller's model on the same data."""
    base_ev = Evaluator(model, validation_data, ev.settings, calibration_data=ev.calibration, cache=ev.cache)
    check = base_ev.for_model(found.model)
    return _row(check.evaluate(found.recipe), base_ev.baseline(), "held out")
