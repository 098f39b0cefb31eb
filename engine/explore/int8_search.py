"""Accuracy-aware int8: which layers stay float so that real int8 meets a fidelity budget.

``search(model, data, runtime=Int8Dynamic() | Int8Static(), ...)`` lands here.

1. The whole model in int8 is measured on all the data.
2. Candidates are *groups* (``engine.int8_probes.candidate_groups``): one Linear/Conv layer, or the
   layers a fused op holds (an attention's query, key and value, which fusion merges into one
   node that can only stay float as a whole), the layers of one block under static int8 (a ResNet
   ``layer1.0``, an EfficientNet ``_blocks.3``: ``block_groups``), and the embedding tables as one group.
3. Each group's sensitivity is probed on a subsample (the first ``probe_samples`` samples) as
   *the gain when only that group is kept float* (the rest int8): the move the search makes, with
   the errors the other int8 layers feed into it. Probing stops at half the time budget. Under a
   0/1 metric (accuracy, agreement) the probes measure cosine to fp32 instead (``probe_evaluator``):
   a few samples of 0/1 scores cannot rank layers. Static int8 pre-processes and calibrates the
   export once for all candidates (``remembered_quantization``); dynamic int8 fuses it once. When the
   int8 map (``layer_sensitivity(runtime=...)``) of the same model and data is cached, its points (the
   same recipes on the same export, all the data) rank the groups instead and nothing is probed.
4. Groups are kept float in order of gain per weight kept float (``gain_order``: the bytes a
   group adds, or its share of the int8 multiply-adds; an embedding table costs no speed). The
   fewest that meet the budget are found by bisection over that order, first on the subsample
   (when the probes measured the metric itself), then on all the data starting from its answer. That
   second bisection is a sequential paired test: a candidate is measured on the subsample first and
   rejected there when its paired drop's lower bound is over the budget; only the others are measured on
   all the data. Only points measured on all the data are ever returned.
5. With ``objective="latency"`` every point is timed against fp32 in the same rounds, and the groups
   whose probe ran faster float than in int8 (int8 slower than fp32 there on this CPU) are tried
   float as well.

The best measured recipe whose paired drop's upper bound is within ``max_accuracy_drop`` is
returned: the fastest (latency) or smallest file (size); at worst the fp32 baseline. No evaluation
starts that the slowest one of its kind so far says would not finish within the time budget; each
candidate is measured once (later asks reuse it). The trail says what was measured, on which data.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from torch import nn

from squeezelab.engine.core.errors import ConfigError
from squeezelab.engine.explore.algorithm_stage import AlgorithmChoice, choose_algorithms
from squeezelab.engine.explore.evaluation import Evaluator, paired_drop_bound
from squeezelab.engine.explore.search_setup import SearchClock
from squeezelab.engine.explore.int8_probes import (
    bisect_prefix, candidate_groups, float_layers_recipe, fp32_export, gain_order, group_costs, group_label, on_export, prefix_layers, prepared_export,
    probe_evaluator, subsample,
)
from squeezelab.engine.measurement.point import Point
from squeezelab.engine.measurement.stats import paired_drop_interval
from squeezelab.engine.core.recipe import Recipe
from squeezelab.engine.core.runtimes import Int8Dynamic, Int8Static
from squeezelab.engine.explore.search_result import _row, SearchResult
from squeezelab.engine.runtime.int8_graph import remembered_fusion
from squeezelab.engine.runtime.quantize_memo import remembered_quantization

__all__ = ["search_int8", "float_layers_recipe"]


class _OutOfTime(Exception):
    """The next evaluation would not finish within the time budget."""


class _Runner:
    """Measures candidates (layers kept float) on the subsample or on all the data, once each.

    Keeps the trail, and the best accepted point measured on all the data.
    """

    def __init__(self, runtime: Any, full: Evaluator, sub: Evaluator, probe: tuple[Evaluator, bool], clock: SearchClock,
                 objective: str, max_drop: float, confidence: float,
                 prepared: Callable[[Recipe], dict[str, Evaluator]] | None = None) -> None:
        probe, own_metric = probe
        self.runtime, self.clock, self.objective = runtime, clock, objective
        self.base = Recipe(runtime=runtime, transforms=())  # the all-int8 recipe layers are kept float from
        self.evs = {"all": full, "subset": sub, "probe": probe}
        # Fidelity steps rewrite the PyTorch model before export: their evaluators run on that export instead.
        self.prepared = prepared
        self._evs_by_steps: dict[tuple, dict[str, Evaluator]] = {(): self.evs}
        self.max_drop, self.confidence = max_drop, confidence
        # Names that measure the same thing: too little data to subsample (the subset is all of it), or
        # probes in the metric itself (they run on the subset).
        self.alias = {"subset": "all"} if sub is full else {}
        if own_metric:
            self.alias["probe"] = self.alias.get("subset", "subset")
        self.bases = {"all": full.baseline()}  # the others when first used (each is a measured fp32 baseline)
        # Bisection on the subset only helps when the subset is smaller and scored in the metric itself.
        self.subset_bisection = sub is not full and own_metric
        self.seen: dict[tuple[frozenset[str], str], dict[str, Any]] = {}
        self.trail: list[dict[str, Any]] = []
        self.best_row = {**_row(self.bases["all"], self.bases["all"], "fp32 baseline"), "speedup": 1.0,
                         "float_layers": None, "drop_bound": 0.0, "accepted": True, "data": f"all ({len(full.samples)})"}
        self.best_recipe = Recipe()

    def measure(self, layers: tuple[str, ...], move: str, on: str, until: float | None = None, *,
                compete: bool = True) -> dict[str, Any]:
        """The row of ``layers`` kept float, measured on ``on`` (``"all"``, ``"subset"`` or ``"probe"``); raises _OutOfTime.

        ``compete=False``: the row does not become the best by itself (the algorithm stage's rows: all int8,
        they are chosen by fidelity, not by the few bytes a step's constants add, see ``adopt``).
        """
        on = self.alias.get(on, on)
        key = (self.base, frozenset(layers), on)
        if key in self.seen:
            return self.seen[key]
        if not self.clock.fits(on, until):
            raise _OutOfTime
        row = self._evaluate(layers, move, on)
        self.seen[key] = row
        if compete:
            self._consider(row, self.base)
        return row

    def _consider(self, row: dict[str, Any], base: Recipe) -> None:
        if row.get("data", "").startswith("all") and row["accepted"] and self._rank(row) < self._rank(self.best_row):
            self.best_row, self.best_recipe = row, float_layers_recipe(base, row["float_layers"])

    def measure_recipe(self, recipe: Recipe, move: str, on: str, until: float | None = None) -> dict[str, Any] | None:
        """The row of the all-int8 ``recipe`` (the algorithm stage), or None when it would not fit in time."""
        self.base, before = recipe, self.base
        try:
            return self.measure((), move, on, until, compete=False)
        except _OutOfTime:
            return None
        finally:
            self.base = before

    def adopt(self, recipe: Recipe) -> None:
        """Start from ``recipe`` (all int8); if it was measured on all the data, it competes for the best now."""
        self.base = recipe
        row = self.seen.get((recipe, frozenset(), self.alias.get("all", "all")))
        if row is not None:
            self._consider(row, recipe)

    def cached(self, layers: tuple[str, ...], move: str) -> dict[str, Any] | None:
        """The row of ``layers`` kept float on all the data when its point is in the cache already (the int8 map,
        ``layer_sensitivity(runtime=...)``, measures the same recipes on the same export), else None: no evaluation."""
        on = self.alias.get("all", "all")
        key = (self.base, frozenset(layers), on)
        if key in self.seen:
            return self.seen[key]
        point = self._evaluators(self.base)[on].cached(replace(float_layers_recipe(self.base, layers), transforms=()))
        if point is None:
            return None
        row = self._row_of(point, layers, move, on, "from the cache")
        self.seen[key] = row
        self._consider(row, self.base)
        return row

    def fails_on_subset(self, layers: tuple[str, ...], move: str) -> bool:
        """The sequential test's first step: ``layers`` kept float measured on the subset (or read from the trail),
        and whether its paired drop is *clearly* over the budget there: the one-sided lower bound at the search's
        confidence above ``max_drop``. Then no full evaluation is needed to reject it; anything else (a pass, or a
        fail the subset cannot tell from a pass) is decided on all the data. No decision without a confidence."""
        if self.confidence <= 0:
            return False
        row = self.measure(layers, move, "subset")
        base, point = self.bases["subset"], row.get("point")
        if point is None or base.scores is None or point.scores is None or len(base.scores) != len(point.scores):
            return False
        low = paired_drop_interval(base.scores, point.scores, self.confidence, sided="lower").low
        row["sequential"] = f"lower bound {low:.4g} > {self.max_drop:g}: rejected on the subset" if low > self.max_drop else ""
        return bool(low > self.max_drop)

    def _evaluate(self, layers: tuple[str, ...], move: str, on: str) -> dict[str, Any]:
        ev = self._evaluators(self.base)[on]
        recipe = float_layers_recipe(self.base, layers)
        try:  # the steps are in the export already: the evaluator quantizes it as it is
            point: Point = self.clock.timed(ev.evaluate, replace(recipe, transforms=()), kind=on)
        except ConfigError:
            if not layers:
                raise  # the all-int8 model itself is refused: the user's recipe, explained
            # every weight kept float: nothing int8 left, so nothing to measure
            return {"value": float("-inf"), "accepted": False, "speedup": 0.0, "float_layers": list(layers), "move": move}
        return self._row_of(point, layers, move, on)

    def _row_of(self, point: Point, layers: tuple[str, ...], move: str, on: str, how: str = "") -> dict[str, Any]:
        """The trail row of ``point`` (``layers`` kept float, measured on ``on``), appended to the trail."""
        ev = self._evaluators(self.base)[on]
        if on not in self.bases:
            self.bases[on] = self.evs[on].baseline()  # drops are against the model as given
        base = self.bases[on]
        data = f"{on} ({len(ev.samples)})" if on != "probe" else f"probe ({len(ev.samples)}, {ev.metric.name})"
        recipe = float_layers_recipe(self.base, layers)
        row = _row(point, base, move)
        row["label"], row["data"] = recipe.label, data + (f", {how}" if how else "")
        row["drop_bound"] = paired_drop_bound(base, point, self.confidence)
        row["accepted"] = on != "probe" and row["drop_bound"] <= self.max_drop  # a proxy's drop is in other units
        row["float_layers"] = list(layers)
        self.trail.append(row)
        return row

    def _evaluators(self, recipe: Recipe) -> dict[str, Evaluator]:
        """The evaluators of ``recipe``'s fidelity steps: over the export they prepare, made once per set of steps."""
        steps = recipe.transforms or ()
        if steps not in self._evs_by_steps:
            self._evs_by_steps[steps] = self.clock.timed(self.prepared, recipe, kind="prepare")
        return self._evs_by_steps[steps]

    def _score(self, row: dict[str, Any]) -> float:
        return row["size_bytes"] if self.objective == "size" else 1.0 / max(row.get("speedup") or 1e-9, 1e-9)

    def _rank(self, row: dict[str, Any]) -> tuple[float, float, int]:
        """Best first: the objective, then fidelity (equal files: the algorithm that lost less), then fewer layers float."""
        return self._score(row), -row["value"], len(row.get("float_layers") or ())


def search_int8(
    model: nn.Module,
    ev: Evaluator,
    runtime: Int8Dynamic | Int8Static,
    *,
    objective: str,
    max_accuracy_drop: float,
    time_budget_s: float,
    confidence: float,
    progress: bool,
    probe_samples: int = 32,
) -> Any:
    """The ``search`` of the int8 runtimes (see the module docstring); returns a ``SearchResult``.

    ``probe_samples``: how many samples the sensitivity probes and the first bisection run on
    (0: all of them).
    """

    with remembered_fusion(), remembered_quantization():
        return _search(model, ev, runtime, objective, max_accuracy_drop, time_budget_s, confidence, progress, probe_samples)


def _search(model: nn.Module, ev: Evaluator, runtime: Any, objective: str, max_accuracy_drop: float,
            time_budget_s: float, confidence: float, progress: bool, probe_samples: int) -> Any:
    import pandas as pd

    clock = SearchClock(time_budget_s)
    export = fp32_export(ev)
    work = on_export(ev, export)

    def prepared(recipe: Recipe) -> dict[str, Evaluator]:
        # Fidelity is to the model as given (for_model keeps its reference outputs): a step need not be
        # exact in fp32 (bias correction changes the float model on purpose).
        steps = prepared_export(ev, recipe)
        probe, _ = probe_evaluator(work, probe_samples)
        return {"all": work.for_model(steps), "subset": subsample(work, probe_samples).for_model(steps),
                "probe": probe.for_model(steps)}

    run = _Runner(runtime, work, subsample(work, probe_samples), probe_evaluator(work, probe_samples), clock, objective,
                  max_accuracy_drop, confidence, prepared)
    stopped = "converged"
    choice = AlgorithmChoice(Recipe(runtime=runtime), {}, "not reached: the time budget ran out")
    try:
        choice = _algorithms(model, run, runtime, ev.calibration is not None)
        start = run.measure((), "start: all int8", "all")
        if not (start["accepted"] and objective == "size"):  # all int8 holding is the smallest file there is
            groups = candidate_groups(model, export, runtime)
            stopped = _descend(groups, group_costs(model, groups, objective), run, start, objective, progress)
    except _OutOfTime:
        stopped = "time budget"
    empty = ["move", "data", "accepted", "value", "drop", "drop_bound", "float_layers"]  # nothing measured in time
    table = pd.DataFrame([{k: v for k, v in row.items() if k != "point"} for row in run.trail], columns=None if run.trail else empty)
    base = run.bases["all"]
    table.attrs.update({"metric": base.metric, "metric_key": base.metric_key, "percent": base.percent})
    return SearchResult(
        recipe=run.best_recipe,
        model=model,
        row=run.best_row,
        trail=table,
        stopped=stopped,
        elapsed_s=time.monotonic() - clock.started,
        baseline=_row(base, base, "fp32 baseline"),
        point=run.best_row.get("point"),
        details={"algorithms": choice.to_dict()},
    )


def _algorithms(model: nn.Module, run: _Runner, runtime: Any, has_calibration: bool) -> AlgorithmChoice:
    """The algorithm stage (``algorithm_stage``), within the first third of the budget; sets where the descent starts."""
    until = run.clock.at(1 / 3)

    def better(a: dict[str, Any], b: dict[str, Any]) -> bool:  # within budget first, then the metric
        return (a["accepted"], a["value"]) > (b["accepted"], b["value"])

    choice = choose_algorithms(
        model, runtime, has_calibration,
        probe=lambda recipe, move: run.measure_recipe(recipe, move, "probe", until),
        verify=lambda recipe, move: run.measure_recipe(recipe, move, "all"),
        better=better,
    )
    run.adopt(choice.recipe)
    return choice


def _descend(groups: list[tuple[str, ...]], costs: dict, run: _Runner, start: dict, objective: str, progress: bool) -> str:
    """Probe, order, bisect on the subsample, verify by bisection on all the data; then (latency) the slow groups.

    Returns why it stopped; raises _OutOfTime when the budget ends between steps.
    """
    gains, faster, complete = _probe(groups, run, objective, progress)
    order = gain_order(gains, costs) + [g for g in groups if g not in gains]  # unprobed: last
    stopped = "converged" if complete else "time budget"
    kept: tuple[str, ...] = ()
    if not start["accepted"]:
        k, out_of_time = _bisect(order, run)
        kept = prefix_layers(order, k) if k is not None else ()
        stopped = "time budget" if out_of_time else stopped
        if k is None:
            return stopped
    slow = tuple(name for group in order if group in faster for name in group if name not in kept)
    if objective == "latency" and slow:
        run.measure(kept + slow, f"also keep {len(slow)} layer(s) float that ran slower in int8", "all")
    return stopped


def _probe(groups: list[tuple[str, ...]], run: _Runner, objective: str, progress: bool) -> tuple[dict, set, bool]:
    """Per-group gain of keeping only that group float, on the subsample (probes stop at half the budget);
    the groups whose probe ran faster than all-int8 (latency: int8 loses to fp32 there); whether all were probed."""
    from tqdm.auto import tqdm

    shared = _from_map(groups, run)
    if shared is not None:
        return shared, set(), True
    half = run.clock.halfway
    gains: dict[tuple[str, ...], float] = {}
    faster: set[tuple[str, ...]] = set()
    try:
        base = run.measure((), "probe start: all int8", "probe", until=half)
        bar = tqdm(groups, desc="int8 sensitivity", disable=not progress, unit="group")
        for group in bar:
            bar.set_postfix_str(f"{run.clock.remaining():.0f} s of the budget left", refresh=False)
            row = run.measure(group, f"probe: {group_label(group)} float", "probe", until=half)
            gains[group] = row["value"] - base["value"]
            if objective == "latency" and (row.get("speedup") or 0) > (base.get("speedup") or 0):
                faster.add(group)
    except _OutOfTime:
        return gains, faster, False
    return gains, faster, True


def _from_map(groups: list[tuple[str, ...]], run: _Runner) -> dict[tuple[str, ...], float] | None:
    """Each group's gain from the int8 map's points, measured on all the data and cached (one implementation:
    ``int8_sensitivity`` measures exactly these recipes on this export), or None when any is missing.

    Better than the subsample's probes (all the data, the metric itself) and free; the rows join the trail as
    ``all (N), from the cache``. Only the runtime's plain all-int8 recipe has a map: after the algorithm stage
    chose fidelity steps, the probes run as usual. Under ``objective="latency"`` the map has no timings: probed.
    """
    if run.objective == "latency" or run.base.transforms:
        return None
    ev = run._evaluators(run.base)[run.alias.get("all", "all")]
    recipes = [replace(float_layers_recipe(run.base, g), transforms=()) for g in [(), *groups]]
    if any(ev.cached(r) is None for r in recipes):
        return None
    base = run.cached((), "probe start: all int8 (int8 map)")
    assert base is not None  # checked above
    return {g: run.cached(g, f"probe: {group_label(g)} float (int8 map)")["value"] - base["value"] for g in groups}


def _bisect(order: list[tuple[str, ...]], run: _Runner) -> tuple[int | None, bool]:
    """The fewest groups (in ``order``) kept float that meet the budget on all the data, and whether time ran out.

    Bisection on the subsample first (cheap), then on all the data starting from its answer.
    """
    def ok(on: str) -> Any:
        def verdict(k: int) -> bool | None:
            layers = prefix_layers(order, k)
            try:
                move = f"bisect: first {k} of {len(order)} groups float ({len(layers)} layers)"
                if on == "all" and run.subset_bisection and run.fails_on_subset(layers, move):
                    return False  # decided on the subset: the paired test says it fails, no full evaluation
                return bool(run.measure(layers, move, on)["accepted"])
            except _OutOfTime:
                return None
        return verdict

    guess, short = bisect_prefix(ok("subset"), len(order)) if run.subset_bisection else (None, False)
    if short and guess is None:
        return None, True
    k, out_of_time = bisect_prefix(ok("all"), len(order), first=guess)  # a guess cut short is still worth verifying
    return k, out_of_time or short
