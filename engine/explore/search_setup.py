"""What a ``search`` may choose from and what it is held to: the caller's ``SearchConfig``, and the plain
data its strategies share.

``SearchConfig`` is what a caller passes (``search(model, data, config=SearchConfig(...))``, or its fields as
keywords): one frozen value, checked when made, changed with ``dataclasses.replace``. From it ``search``
builds ``SearchSpace``, which holds the checked choices (objective, runtime, widths,
sparsities, quantizer, fine-tuning); ``SearchGoal`` the accuracy budget and its
confidence, with the ``SearchClock`` that keeps the time budget: no evaluation
starts that the slowest one so far says would not finish in time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from squeezelab.engine.core.arguments import as_integer, count, finite_number, grid_lists
from squeezelab.engine.core.errors import ConfigError
from squeezelab.engine.core.quantizers import QuantizationConfig
from squeezelab.engine.core.runtimes import Runtime
from squeezelab.engine.explore.grid import weight_quantizer

__all__ = ["SearchConfig", "SearchSpace", "SearchGoal", "SearchClock", "OBJECTIVES", "space_of", "goal_of"]

# The objectives a search minimises (``search_strategies._BY_OBJECTIVE`` has one strategy for each).
OBJECTIVES = ("size", "latency")


@dataclass(frozen=True, kw_only=True)
class SearchConfig:
    """What ``search`` may choose and what it is held to: one value to keep, share and change with
    ``dataclasses.replace`` (which checks the new values again).

    ``search(model, data, config=SearchConfig(objective="latency"))`` is ``search(model, data, objective="latency")``;
    keywords given with a config change its fields. Every value is checked when the config is made
    (``ConfigError`` naming the field and what is allowed), so a bad one fails before any work.

    Args:
        max_accuracy_drop: allowed drop of the metric below the fp32 baseline (0.01 = 1 point), finite, >= 0.
        objective: ``"size"`` (bytes of the compressed file) or ``"latency"`` (channel pruning, ONNX Runtime).
        time_budget_s: wall-clock budget in seconds, finite and > 0; when spent, the best result so far is returned.
        bits, sparsity: the values each layer may take (``bits`` only for ``"size"``): one value or a non-empty
            list each; kept widest first and lowest first, each value once.
        quantization: the weight quantizer whose width is chosen per layer (a name or a config; not float16).
        runtime: None (``Simulated(coding="huffman")`` for size, ``Onnx()`` for latency), ``Int8Dynamic()`` /
            ``Int8Static()`` (which layers stay float in real int8) or ``WeightOnly(...)``; see ``search``.
        finetune_epochs: passes over ``train_data`` when a sparsity step is retried after fine-tuning.
        confidence: a step is kept only if the one-sided upper bound of its drop (paired by sample, at this
            confidence) is within budget; 0 judges the plain measured drop.
        seed: seeds the fine-tuning.

    Examples:
        >>> SearchConfig(bits=(4, 8, 8), sparsity=0.5).bits
        (8, 4)
        >>> SearchConfig(objective="energy")
        Traceback (most recent call last):
        ...
        squeezelab.engine.core.errors.ConfigError: SearchConfig: objective='energy'; use 'size' or 'latency'.
    """

    max_accuracy_drop: float = 0.01
    objective: str = "size"
    time_budget_s: float = 120.0
    bits: int | Sequence[int] = (8, 6, 5, 4, 3, 2)
    sparsity: float | Sequence[float] = (0.0, 0.25, 0.5, 0.7, 0.8, 0.9)
    quantization: str | QuantizationConfig = "linear-symmetric"
    runtime: Runtime | None = None
    finetune_epochs: int = 1
    confidence: float = 0.9
    seed: int = 0

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"SearchConfig: objective={self.objective!r}; use {' or '.join(map(repr, OBJECTIVES))}.")
        if self.runtime is not None and not isinstance(self.runtime, Runtime):
            raise ConfigError(
                f"SearchConfig: runtime={self.runtime!r}; pass a runtime config (Int8Dynamic(), Int8Static(), "
                "WeightOnly(...), Onnx(), Simulated(...)) or None for the objective's default."
            )
        checked = {
            "max_accuracy_drop": finite_number("max_accuracy_drop", self.max_accuracy_drop, low=0, hint=" (0.01 = 1 point)"),
            "confidence": finite_number("confidence", self.confidence, low=0, high=1, high_open=True,
                                        hint=" (0.9 = 90% one-sided bound; 0 = plain drop)"),
            "time_budget_s": finite_number("time_budget_s", self.time_budget_s, low=0, low_open=True, hint=" seconds"),
            "finetune_epochs": count("finetune_epochs", self.finetune_epochs, low=1, hint=" (passes over train_data)"),
        }
        seed = as_integer(self.seed)
        if seed is None:
            raise ConfigError(f"SearchConfig: seed={self.seed!r} must be an integer.")
        checked["seed"] = seed
        quantizer = weight_quantizer(self.quantization, width_based=True)
        bits, sparsity = grid_lists(self.bits, self.sparsity, layout="each")
        for b in bits:  # every width must suit the quantizer: refused now, not after the baseline ran
            quantizer.with_bits(b)
        checked["bits"] = tuple(sorted(set(bits), reverse=True))
        checked["sparsity"] = tuple(sorted(set(sparsity)))
        for name, value in checked.items():
            object.__setattr__(self, name, value)


@dataclass(frozen=True)
class SearchSpace:
    """What ``search`` may choose from, checked: the objective, runtime (None: the objective's default),
    per-layer widths (widest first) and sparsities (lowest first), the quantizer, and fine-tuning."""

    objective: str
    runtime: Runtime | None
    bits: tuple[int, ...]
    sparsity: tuple[float, ...]
    quantizer: QuantizationConfig
    train_data: Any = None
    finetune_epochs: int = 1
    seed: int = 0


class SearchClock:
    """The time budget: when the search started, and whether one more evaluation still fits.

    Evaluations are timed by ``kind`` (the int8 search keeps "probe", "subset", "all" and "prepare" apart:
    a probe on 32 samples says nothing of a verification on all the data); ``fits(kind)`` asks whether one
    more evaluation as slow as the slowest of that kind so far ends by ``until`` (default: the budget's end).
    """

    def __init__(self, budget_s: float) -> None:
        self.started = time.monotonic()
        self.budget_s = budget_s
        self.slowest_by_kind: dict[str, float] = {}

    @property
    def slowest(self) -> float:
        """The slowest evaluation so far, of any kind (0 before the first)."""
        return max(self.slowest_by_kind.values(), default=0.0)

    @property
    def halfway(self) -> float:
        """The ``time.monotonic()`` value at half the budget (where probing stops)."""
        return self.started + self.budget_s / 2

    def at(self, fraction: float) -> float:
        """The ``time.monotonic()`` value at ``fraction`` of the budget."""
        return self.started + self.budget_s * fraction

    def remaining(self) -> float:
        return max(self.started + self.budget_s - time.monotonic(), 0.0)

    def fits(self, kind: str | None = None, until: float | None = None) -> bool:
        """Whether one more evaluation as slow as the slowest so far (of ``kind``, or of any) ends by ``until``."""
        end = self.started + self.budget_s if until is None else until
        slowest = self.slowest if kind is None else self.slowest_by_kind.get(kind, 0.0)
        return time.monotonic() + slowest <= end

    def spent(self) -> bool:
        return time.monotonic() - self.started > self.budget_s

    def timed(self, fn: Callable[..., Any], *args: Any, kind: str = "evaluation") -> Any:
        began = time.monotonic()
        out = fn(*args)
        self.slowest_by_kind[kind] = max(self.slowest_by_kind.get(kind, 0.0), time.monotonic() - began)
        return out


@dataclass(frozen=True)
class SearchGoal:
    """What every strategy is held to: the drop budget, judged at ``confidence``, within ``clock``."""

    max_accuracy_drop: float
    confidence: float
    clock: SearchClock
    progress: bool = True


def space_of(config: SearchConfig, train_data: Any) -> SearchSpace:
    """The checked choices the strategies read."""
    return SearchSpace(
        objective=config.objective, runtime=config.runtime, bits=config.bits, sparsity=config.sparsity,  # type: ignore[arg-type]
        quantizer=weight_quantizer(config.quantization, width_based=True), train_data=train_data,
        finetune_epochs=config.finetune_epochs, seed=config.seed,
    )


def goal_of(config: SearchConfig, progress: bool) -> SearchGoal:
    """The budget every strategy is held to; its clock starts now."""
    return SearchGoal(max_accuracy_drop=config.max_accuracy_drop, confidence=config.confidence,
                      clock=SearchClock(config.time_budget_s), progress=progress)
