"""The greedy descent ``search`` runs for its float objectives (``SizeSearch``, ``LatencySearch``).

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

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from squeezelab.engine.core.recipe import LayerSetting, Recipe
from squeezelab.engine.core.runtimes import Runtime
from squeezelab.engine.explore.evaluation import Evaluator, paired_drop_bound
from squeezelab.engine.explore.search_result import SearchResult, _row, trail_table
from squeezelab.engine.explore.search_setup import SearchGoal, SearchSpace
from squeezelab.engine.measurement.point import Point

__all__ = ["Knob", "Plan", "GreedyDescent"]

State = dict[tuple[str, str], Any]  # (layer, axis) -> its current value


@dataclass(frozen=True)
class Knob:
    layer: str
    axis: str  # "bits" or "sparsity"
    values: tuple  # from gentlest to most aggressive


@dataclass
class Plan:
    """A strategy's knobs; the parameter count behind each knob (a step's saving is proportional to it);
    and, where probed, each step's measured drop: ``{(layer, axis, value): drop}`` (unprobed: 0)."""

    knobs: list[Knob]
    sizes: dict[str, int]
    drop_of: dict[tuple[str, str, Any], float] = field(default_factory=dict)


class GreedyDescent:
    """The descent of the module docstring; subclasses implement ``plan``, ``recipe`` and ``score``."""

    timed = False  # whether latency is judged (a subclass that does sets True: its points are timed)

    def __init__(self, model: nn.Module, space: SearchSpace, runtime: Runtime) -> None:
        self.model, self.space, self.runtime = model, space, runtime

    def plan(self, ev: Evaluator, goal: SearchGoal) -> Plan:
        """The knobs to turn, and what each step saves and costs (see ``Plan``)."""
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

    def run(self, ev: Evaluator, baseline: Point, goal: SearchGoal) -> SearchResult:
        walk = _Walk(self, ev, baseline, goal, self.plan(ev, goal))
        stopped = walk.descend()
        best_row, best_recipe, best_model = walk.best
        return SearchResult(recipe=best_recipe, model=best_model, row=best_row, trail=trail_table(walk.trail, baseline),
                            stopped=stopped)


class _Walk:
    """One run of the descent: the current setting, the working model, the trail and the best so far."""

    def __init__(self, strategy: GreedyDescent, ev: Evaluator, baseline: Point, goal: SearchGoal, plan: Plan) -> None:
        self.strategy, self.ev, self.baseline, self.goal, self.plan = strategy, ev, baseline, goal, plan
        self.state: State = {(k.layer, k.axis): k.values[0] for k in plan.knobs}
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
        drop_of, sizes = self.plan.drop_of, self.plan.sizes
        for k in self.plan.knobs:
            key = (k.layer, k.axis)
            i = k.values.index(self.state[key])
            if key in self.ruled_out or i + 1 >= len(k.values):
                continue
            new = k.values[i + 1]
            cost = drop_of.get((k.layer, k.axis, new), 0.0) - drop_of.get((k.layer, k.axis, self.state[key]), 0.0)
            if k.axis == "bits":
                gain = sizes[k.layer] * (self.state[key] - new) / 8
            else:
                width = self.state.get((k.layer, "bits"), 8)
                gain = sizes[k.layer] * (new - self.state[key]) * width / 8
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
