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
    """The time budget: when the search started, and whether the slowest evaluation so far still fits."""

    def __init__(self, budget_s: float) -> None:
        self.started = time.monotonic()
        self.budget_s = budget_s
        self.slowest = 0.0

    @property
    def halfway(self) -> float:
        """The ``time.monotonic()`` value at half the budget (where probing stops)."""
        return self.started + self.budget_s / 2

    def remaining(self) -> float:
        return max(self.started + self.budget_s - time.monotonic(), 0.0)

    def fits(self) -> bool:
        """Whether one more evaluation as slow as the slowest so far ends within the budget."""
        return time.monotonic() - self.started + self.slowest <= self.budget_s

    def spent(self) -> bool:
        return time.monotonic() - self.started > self.budget_s

    def timed(self, fn: Callable[..., Any], *args: Any) -> Any:
        began = time.monotonic()
        out = fn(*args)
        self.slowest = max(self.slowest, time.monotonic() - began)
        return out


@dataclass(frozen=True)
class SearchGoal:
    """What every strategy is held to: the drop budget, judged at ``confidence``, within ``clock``."""

    max_accuracy_drop: float
    confidence: float
    clock: SearchClock
    progress: bool = True
