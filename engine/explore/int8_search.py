"""Accuracy-aware int8: which layers stay float so that real int8 meets a fidelity budget.

``search(model, data, runtime=Int8Dynamic() | Int8Static(), ...)`` lands here.
It starts from the whole model in int8 and measures it. Then it probes each
Linear/Conv layer's sensitivity as *the gain when only that layer is kept
float* (the rest int8). That is the move the search makes from its start, so
the probe measures it with the errors the other int8 layers feed into the
layer; the other reading (only that layer int8, the rest float) misses how
int8 errors compound through depth and ranks late layers too low.

Layers are then kept float in order of gain, one more at a time, each
candidate measured whole, until the paired drop's upper bound is within
``max_accuracy_drop``. With ``objective="latency"`` every point is timed
against fp32 in the same rounds, and layers whose probe ran faster kept
float than in int8 (int8 slower than fp32 for that layer on this CPU) are
tried float as well. The best measured recipe within the budget is returned:
the fastest (latency) or smallest file (size); at worst the fp32 baseline.
Probing gets at most half the time budget; no evaluation starts that the
slowest one so far says would not finish in time.
"""

from __future__ import annotations

import time
from typing import Any

from torch import nn

from squeezelab.engine.core.errors import ConfigError
from squeezelab.engine.explore.evaluation import Evaluator, paired_drop_bound
from squeezelab.engine.measurement.point import Point
from squeezelab.engine.core.recipe import LayerSetting, Recipe
from squeezelab.engine.core.runtimes import Int8Dynamic, Int8Static

__all__ = ["search_int8", "float_layers_recipe"]


def float_layers_recipe(runtime: Int8Dynamic | Int8Static, layers: list[str] | tuple[str, ...]) -> Recipe:
    """``runtime`` for the whole model except ``layers``, which stay float32."""
    return Recipe(runtime=runtime, layers=tuple(LayerSetting(name=name, bits=32) for name in layers))


class _Clock:
    """The time budget: how long the slowest evaluation took, and whether another one fits."""

    def __init__(self, budget_s: float) -> None:
        self.started = time.monotonic()
        self.budget_s = budget_s
        self.slowest = 0.0

    def fits(self, until: float | None = None) -> bool:
        end = self.started + self.budget_s if until is None else until
        return time.monotonic() + self.slowest <= end

    def timed(self, fn: Any, *args: Any) -> Any:
        began = time.monotonic()
        out = fn(*args)
        self.slowest = max(self.slowest, time.monotonic() - began)
        return out


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
) -> Any:
    """The ``search`` of the int8 runtimes (see the module docstring); returns a ``SearchResult``."""
    import pandas as pd

    from squeezelab.engine.explore.search_result import SearchResult, _row
    from squeezelab.engine.core.layers import prunable_layers

    clock = _Clock(time_budget_s)
    base = ev.baseline()
    trail: list[dict[str, Any]] = []

    def measure(layers: list[str], move: str) -> dict[str, Any]:
        try:
            point: Point = clock.timed(ev.evaluate, float_layers_recipe(runtime, layers))
        except ConfigError:
            if not layers:
                raise  # the all-int8 model itself is refused: the user's recipe, explained
            # every weight kept float: nothing int8 left, so nothing to measure
            return {"value": float("-inf"), "accepted": False, "speedup": 0.0, "float_layers": list(layers), "move": move}
        row = _row(point, base, move)
        row["drop_bound"] = paired_drop_bound(base, point, confidence)
        row["accepted"] = row["drop_bound"] <= max_accuracy_drop
        row["float_layers"] = list(layers)
        trail.append(row)
        consider(row)  # every point measured on the data is a candidate, probes included
        return row

    def score(row: dict[str, Any]) -> float:
        return row["size_bytes"] if objective == "size" else 1.0 / max(row.get("speedup") or 1e-9, 1e-9)

    best_row = {**_row(base, base, "fp32 baseline"), "speedup": 1.0, "float_layers": None, "drop_bound": 0.0, "accepted": True}
    best_recipe = Recipe()

    def consider(row: dict[str, Any]) -> None:
        nonlocal best_row, best_recipe
        if row["accepted"] and score(row) <= score(best_row):
            best_row, best_recipe = row, float_layers_recipe(runtime, row["float_layers"])

    start = measure([], "start: all int8")
    names = _layers_with_nodes(ev, [name for name, _ in prunable_layers(model)])
    stopped = "converged"
    gains, faster = _probe(names, start, measure, clock, objective, progress)
    if len(gains) < len(names):
        stopped = "time budget"
    if not (start["accepted"] and objective == "size"):
        stopped = _descend(names, gains, faster, start, measure, clock, objective) or stopped
    table = pd.DataFrame([{k: v for k, v in row.items() if k != "point"} for row in trail])
    table.attrs.update({"metric": base.metric, "metric_key": base.metric_key, "percent": base.percent})
    return SearchResult(
        recipe=best_recipe,
        model=model,
        row=best_row,
        trail=table,
        stopped=stopped,
        elapsed_s=time.monotonic() - clock.started,
        baseline=_row(base, base, "fp32 baseline"),
        point=best_row.get("point"),
    )


def _layers_with_nodes(ev: Evaluator, names: list[str]) -> list[str]:
    """The layers that appear in the exported graph (a pooler the output does not use has no node)."""
    from squeezelab.engine.pipeline.compress import compress
    from squeezelab.engine.runtime.int8_graph import layers_in_graph

    fp32 = compress(ev.model, Recipe(), example_inputs=ev.samples.inputs.slice(0, 1), output=ev.settings.output)
    return layers_in_graph(fp32.onnx_bytes, names)


def _probe(names: list[str], start: dict, measure: Any, clock: _Clock, objective: str, progress: bool) -> tuple[dict, set]:
    """Per-layer gain of keeping only that layer float (probes stop at half the budget), and the layers
    whose probe ran faster than all-int8 (latency only: int8 loses to fp32 there)."""
    if start["accepted"] and objective == "size":
        return {}, set()  # all int8 already holds: nothing smaller to find
    from tqdm.auto import tqdm

    gains: dict[str, float] = {}
    faster: set[str] = set()
    half = clock.started + clock.budget_s / 2
    for name in tqdm(names, desc="int8 sensitivity", disable=not progress, unit="layer"):
        if not clock.fits(half):
            break
        row = measure([name], f"probe: {name} float")
        gains[name] = row["value"] - start["value"]
        if objective == "latency" and (row.get("speedup") or 0) > (start.get("speedup") or 0):
            faster.add(name)
    return gains, faster


def _descend(
    names: list[str], gains: dict, faster: set, start: dict, measure: Any, clock: _Clock, objective: str
) -> str | None:
    """Keep layers float in order of gain until the budget holds; then (latency) the slow int8 layers too.

    Returns ``"time budget"`` when it ran out of time, else None.
    """
    kept: list[str] = []
    row = start
    order = sorted(gains, key=lambda n: -gains[n])
    for name in order:
        if row["accepted"]:
            break
        if not clock.fits():
            return "time budget"
        kept.append(name)
        row = measure(list(kept), f"keep {name} float ({len(kept)} float)")
    if objective == "latency" and row["accepted"]:
        slow = [n for n in names if n in faster and n not in kept]
        if slow:
            if not clock.fits():
                return "time budget"
            measure(kept + slow, f"also keep {len(slow)} layer(s) float that ran slower in int8")
    return None

