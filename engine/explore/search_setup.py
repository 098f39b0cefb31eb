"""What a ``search`` may choose from and what it is held to, as plain data its strategies share.

``SearchSpace`` holds the checked choices (objective, runtime, widths,
sparsities, quantizer, fine-tuning); ``SearchGoal`` the accuracy budget and its
confidence, with the ``SearchClock`` that keeps the time budget: no evaluation
starts that the slowest one so far says would not finish in time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from squeezelab.engine.core.quantizers import QuantizationConfig
from squeezelab.engine.core.runtimes import Runtime

__all__ = ["SearchSpace", "SearchGoal", "SearchClock"]


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
