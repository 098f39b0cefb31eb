"""The greedy descent ``search`` runs for its float objectives, and the plain data its strategies share.

One knob per (layer, axis) — a layer's width, or its sparsity / channel ratio —
each with its values from gentlest to most aggressive. From the gentlest
setting, the descent repeatedly takes the move with the best estimated gain
per unit of sensitivity (one knob one step further), measures the whole model
with it, and keeps it if the upper bound of the accuracy drop is within the
budget. A move that breaks the budget may be retried on a retrained model
(``GreedyDescent.retrainer``), and otherwise is set aside; it gets one more try
once other moves have been kept. It stops when no move is left or the time
budget is spent.

A subclass says what its knobs are (``plan``), which recipe a setting is
(``recipe``) and what "better" means (``score``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from squeezelab.engine.core.recipe import LayerSetting, QuantizationConfig, Recipe, Runtime
from squeezelab.engine.explore.evaluation import Evaluator, paired_drop_bound
from squeezelab.engine.explore.search_result import _row, trail_table
from squeezelab.engine.measurement.point import Point

__all__ = ["SearchSpace", "SearchGoal", "SearchClock", "Found", "Knob", "GreedyDescent"]

State = dict[tuple[str, str], Any]  # (layer, axis) -> its current value


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


@dataclass
class Found:
    """A strategy's answer: the best measured recipe, its model and row, the trail (a DataFrame), why it stopped."""

    recipe: Recipe
    model: nn.Module
    row: dict[str, Any]
    trail: Any
    stopped: str


@dataclass(frozen=True)
class Knob:
    layer: str
    axis: str  # "bits" or "sparsity"
    values: tuple  # from gentlest to most aggressive


class GreedyDescent:
    """The descent of the module docstring; subclasses implement ``plan``, ``recipe`` and ``score``."""

    rounds = 0

    def __init__(self, model: nn.Module, space: SearchSpace, runtime: Runtime) -> None:
        self.model, self.space, self.runtime = model, space, runtime
        self.drop_of: dict[tuple[str, str, Any], float] = {}  # (layer, axis, value) -> probed drop, when probed

    def plan(self, ev: Evaluator, goal: SearchGoal) -> tuple[list[Knob], dict[str, int]]:
        """The knobs, and the parameter count of each knob's layer (what a step saves is proportional to it)."""
        raise NotImplementedError

    def recipe(self, state: State) -> Recipe:
        raise NotImplementedError

    def score(self, row: dict[str, Any]) -> float:
        """Lower is better."""
        raise NotImplementedError

    def retrainer(self, knob: Knob) -> Callable[[nn.Module, State], nn.Module] | None:
        """``retrain(model, state) -> model`` to retry a step of ``knob`` that broke the budget; None: no retry."""
        return None

    @staticmethod
    def layer_settings(state: State) -> tuple[LayerSetting, ...]:
        per_layer: dict[str, dict[str, Any]] = {}
        for (layer, axis), value in state.items():
            per_layer.setdefault(layer, {})[axis] = value
        return tuple(LayerSetting(name=name, bits=v.get("bits"), sparsity=v.get("sparsity")) for name, v in per_layer.items())

    def run(self, ev: Evaluator, baseline: Point, goal: SearchGoal) -> Found:
        knobs, sizes = self.plan(ev, goal)
        walk = _Walk(self, ev, baseline, goal, knobs, sizes)
        stopped = walk.descend()
        best_row, best_recipe, best_model = walk.best
        return Found(recipe=best_recipe, model=best_model, row=best_row, trail=trail_table(walk.trail, baseline), stopped=stopped)


class _Walk:
    """One run of the descent: the current setting, the working model, the trail and the best so far."""

    def __init__(self, strategy: GreedyDescent, ev: Evaluator, baseline: Point, goal: SearchGoal,
                 knobs: list[Knob], sizes: dict[str, int]) -> None:
        self.strategy, self.ev, self.baseline, self.goal = strategy, ev, baseline, goal
        self.knobs, self.sizes = knobs, sizes
        self.state: State = {(k.layer, k.axis): k.values[0] for k in knobs}
        self.trail: list[dict[str, Any]] = []
        self.work_model, self.work_ev = strategy.model, ev  # a retrained copy replaces them once a step is kept on it
        fp32 = {**_row(baseline, baseline, "fp32 baseline"), "speedup": 1.0}
        self.best: tuple[dict[str, Any], Recipe, nn.Module] = (fp32, Recipe(), strategy.model)
        # knob -> how many steps had been kept when it broke the budget. Accuracy is not monotone in
        # compression (coarser weights sometimes generalise better), so a knob ruled out earlier gets
        # one more try after other steps have been kept; the search ends when no such retry is left.
        self.ruled_out: dict[tuple[str, str], int] = {}
        self.kept = 0

    def measure(self, state: State, move: str, evaluator: Evaluator) -> dict[str, Any]:
        point = self.goal.clock.timed(evaluator.evaluate, self.strategy.recipe(state))
        row = _row(point, self.baseline, move)
        row["drop_bound"] = paired_drop_bound(self.baseline, point, self.goal.confidence)  # against the caller's model
        self.trail.append(row)
        return row

    def within_budget(self, row: dict[str, Any]) -> bool:
        return row["drop_bound"] <= self.goal.max_accuracy_drop

    def consider(self, row: dict[str, Any]) -> None:
        """Make ``row`` (measured at the current setting on the working model) the best if it is."""
        if row["accepted"] and self.strategy.score(row) <= self.strategy.score(self.best[0]):
            self.best = (row, self.strategy.recipe(self.state), self.work_model)

    def descend(self) -> str:
        """Walk until no move is left (``"converged"``) or the time is spent (``"time budget"``)."""
        from tqdm.auto import tqdm

        start = self.measure(self.state, "start", self.ev)
        start["accepted"] = self.within_budget(start)
        self.consider(start)
        with tqdm(desc="search", disable=not self.goal.progress, unit="eval") as bar:
            while self.goal.clock.fits():
                move = self.next_move()
                if move is None:
                    if not self.retry_ruled_out():
                        return "converged"
                    continue
                self.step(*move)
                bar.update()
        return "time budget"

    def next_move(self) -> tuple[Knob, Any] | None:
        """The knob step with the best estimated gain per unit of probed sensitivity, or None."""
        moves = []
        drop_of = self.strategy.drop_of
        for k in self.knobs:
            key = (k.layer, k.axis)
            i = k.values.index(self.state[key])
            if key in self.ruled_out or i + 1 >= len(k.values):
                continue
            new = k.values[i + 1]
            cost = drop_of.get((k.layer, k.axis, new), 0.0) - drop_of.get((k.layer, k.axis, self.state[key]), 0.0)
            if k.axis == "bits":
                gain = self.sizes[k.layer] * (self.state[key] - new) / 8
            else:
                width = self.state.get((k.layer, "bits"), 8)
                gain = self.sizes[k.layer] * (new - self.state[key]) * width / 8
            moves.append((gain / (max(cost, 0.0) + 1e-3), k, new))
        if not moves:
            return None
        moves.sort(key=lambda m: -m[0])
        _, knob, new = moves[0]
        return knob, new

    def retry_ruled_out(self) -> bool:
        """Give the knobs ruled out before the last kept step another try; False when there are none."""
        retry = [key for key, at in self.ruled_out.items() if at < self.kept]
        for key in retry:
            del self.ruled_out[key]
        return bool(retry)

    def step(self, knob: Knob, new: Any) -> None:
        """Measure one knob one step further; keep it if within budget (retrained if the strategy can)."""
        key = (knob.layer, knob.axis)
        trial = {**self.state, key: new}
        how = f"{knob.layer} {knob.axis} {self.state[key]} -> {new}"
        row = self.measure(trial, how, self.work_ev)
        ok = self.within_budget(row)
        retrain = self.strategy.retrainer(knob)
        if not ok and retrain is not None and not self.goal.clock.spent():
            row["accepted"] = False
            tuned = retrain(self.work_model, trial)
            tuned_ev = self.ev.for_model(tuned)  # judged against the caller's model, as every row is
            row = self.measure(trial, how + " + fine-tune", tuned_ev)
            ok = self.within_budget(row)
            if ok:
                self.work_model, self.work_ev = tuned, tuned_ev
        row["accepted"] = ok
        if ok:
            self.state = trial
            self.kept += 1
            self.consider(row)
        else:
            self.ruled_out[key] = self.kept
