"""``search(runtime=WeightOnly(...), objective="size")``: the smallest weight-only file within the budget,
trying how the weights are rounded before spending bytes.

MatMulNBits stores every Linear at one width and block size, so what a search can choose is how the
weights are fitted (GPTQ on the calibration data, HQQ's optimised scales, round to nearest) and how
many bytes to spend (smaller blocks, then 8 bits). Candidates are taken in order of file size (the
asked block, then each smaller block, then 8 bits at the asked block); at each size the methods are
tried most faithful first (GPTQ only when calibration data is given; HQQ only at 4 bits, asymmetric)
and the first that holds the budget ends that size: a later size can only be larger. The first size
with a method that holds is the answer; at worst the fp32 baseline. Every evaluation is on all the
data and is in the trail; ``details["algorithms"]`` records what was tried and chosen.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from torch import nn

from squeezelab.engine.core.recipe import Recipe
from squeezelab.engine.core.runtimes import WEIGHT_ONLY_BLOCK_SIZES, WeightOnly
from squeezelab.engine.explore.evaluation import Evaluator, paired_drop_bound
from squeezelab.engine.explore.int8_probes import fp32_export, on_export
from squeezelab.engine.explore.search_result import SearchResult, _row, trail_table
from squeezelab.engine.explore.search_setup import SearchGoal
from squeezelab.engine.measurement.point import Point

__all__ = ["WeightOnlySearch", "weight_only_candidates"]


def weight_only_candidates(runtime: WeightOnly, has_calibration: bool) -> list[list[WeightOnly]]:
    """Candidate runtimes grouped by file size, smallest first; within a size, most faithful method first."""
    sizes = [(runtime.bits, b) for b in sorted(WEIGHT_ONLY_BLOCK_SIZES, reverse=True) if b <= runtime.block_size]
    if runtime.bits == 4:
        sizes.append((8, runtime.block_size))
    groups = []
    for bits, block in sizes:
        methods = (["gptq"] if has_calibration else []) + (["hqq"] if bits == 4 and not runtime.symmetric else []) + ["rtn"]
        groups.append([replace(runtime, bits=bits, block_size=block, method=m, compute=_compute(runtime, m)) for m in methods])
    return groups


def _compute(runtime: WeightOnly, method: str) -> str | None:
    """The runtime's compute, except that HQQ's float zero points have no int8 kernel."""
    return "float" if method == "hqq" and runtime.compute == "int8" else runtime.compute


class WeightOnlySearch:
    """The weight-only size search (see the module docstring) behind the strategy interface."""

    timed = False  # size needs no timing

    def __init__(self, model: nn.Module, runtime: WeightOnly) -> None:
        self.model, self.runtime = model, runtime

    def run(self, ev: Evaluator, baseline: Point, goal: SearchGoal) -> SearchResult:
        ev = on_export(ev, fp32_export(ev))  # every candidate quantizes one export: exported (and checked) once
        rows: list[dict[str, Any]] = []
        tried: dict[str, float] = {}
        best, best_row = Recipe(), {**_row(baseline, baseline, "fp32 baseline"), "accepted": True, "drop_bound": 0.0}
        stopped = "converged: no candidate held the budget"
        for size in weight_only_candidates(self.runtime, ev.calibration is not None):
            for runtime in size:
                if not goal.clock.fits():
                    return self._found(best, best_row, rows, "time budget", tried)
                recipe = Recipe(runtime=runtime)
                point = goal.clock.timed(ev.evaluate, recipe)
                row = _row(point, baseline, f"weight-only: {runtime.label}")
                row["drop_bound"] = paired_drop_bound(baseline, point, goal.confidence)
                row["accepted"] = row["drop_bound"] <= goal.max_accuracy_drop
                rows.append(row)
                tried[runtime.label] = point.value
                if row["accepted"]:
                    return self._found(recipe, row, rows, "converged", tried)
        return self._found(best, best_row, rows, stopped, tried)

    def _found(self, recipe: Recipe, row: dict[str, Any], rows: list[dict[str, Any]], stopped: str,
               tried: dict[str, float]) -> SearchResult:
        details = {"algorithms": {"chosen": recipe.label, "tried": tried,
                                  "why": "the smallest file whose drop held the budget, most faithful method first"}}
        table = trail_table(rows, row["point"]) if rows else trail_table([row], row["point"])
        return SearchResult(recipe=recipe, model=self.model, row=row, trail=table, stopped=stopped, details=details)
