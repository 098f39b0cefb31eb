"""The strategies ``search`` runs: one small class per objective (and one for the int8 runtimes).

Every strategy has the same two parts: ``timed`` (whether latency is judged: its evaluations
then take the settings' timing rounds, ``Settings.for_sweeps()``'s unless the caller says; otherwise none) and
``run(ev, baseline, goal) -> SearchResult`` (what it found; ``search`` adds the
whole search's time, the baseline row and the held-out check). ``strategy_for`` picks one from
``_BY_RUNTIME`` (a runtime with a search of its own) or else ``_BY_OBJECTIVE``,
so adding an objective is adding a class and a line in that table.

- ``SizeSearch`` (``objective="size"``): per-layer widths and sparsities of a
  simulated quantizer, ordered by measured per-layer sensitivity; a sparsity
  step that breaks the budget is retried after a short fine-tune when
  ``train_data`` is given.
- ``LatencySearch`` (``objective="latency"``): channels removed per group of
  coupled layers (heads per attention module), run in ONNX Runtime.
- ``Int8Search``: which layers stay float in real int8 (``int8_search``), after the algorithms.
- ``WeightOnlySearch`` (``WeightOnly`` with ``objective="size"``): the rounding method, then the bytes
  (``weight_only_search``).

The first two share ``GreedyDescent`` (in ``greedy_descent``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

from torch import nn

from squeezelab.engine.core.errors import ConfigError
from squeezelab.engine.core.layers import prunable_layers
from squeezelab.engine.core.pruners import ChannelPruning, MagnitudePruning
from squeezelab.engine.core.recipe import Recipe
from squeezelab.engine.core.runtimes import Int8Dynamic, Int8Static, Onnx, Runtime, Simulated, WeightOnly
from squeezelab.engine.explore.evaluation import Evaluator
from squeezelab.engine.explore.greedy_descent import GreedyDescent, Knob, Plan
from squeezelab.engine.explore.int8_search import search_int8
from squeezelab.engine.explore.search_result import SearchResult
from squeezelab.engine.explore.search_setup import OBJECTIVES, SearchGoal, SearchSpace
from squeezelab.engine.explore.weight_only_search import WeightOnlySearch
from squeezelab.engine.explore.sensitivity import layer_sensitivity
from squeezelab.engine.measurement.point import Point
from squeezelab.engine.pruning.prune import bake_masks_, prune
from squeezelab.engine.pruning.structured import prunable_groups
from squeezelab.engine.train.finetune import Training, finetune

__all__ = ["SearchStrategy", "strategy_for", "OBJECTIVES", "SizeSearch", "LatencySearch", "Int8Search"]


class SearchStrategy(Protocol):
    """What ``search`` asks of a strategy (see the module docstring)."""

    timed: bool

    def run(self, ev: Evaluator, baseline: Point, goal: SearchGoal) -> SearchResult: ...


class SizeSearch(GreedyDescent):
    """Per-layer widths and sparsities of a simulated quantizer, in the smallest file within the budget."""

    timed = False  # size needs no timing

    def __init__(self, model: nn.Module, space: SearchSpace) -> None:
        super().__init__(model, space, space.runtime or Simulated(coding="huffman"))

    def plan(self, ev: Evaluator, goal: SearchGoal) -> Plan:
        space = self.space
        # Probing gets at most half the time budget; probes not measured by then count as harmless.
        sens = layer_sensitivity(
            self.model, ev.data, bits=space.bits, sparsity=[s for s in space.sparsity if s > 0],
            quantization=space.quantizer, evaluator=ev, progress=False, deadline=goal.clock.halfway, method="exact",
        )
        drop_of = {(r.layer, r.axis, r.value): max(r.drop, 0.0) for r in sens.itertuples() if r.drop == r.drop}
        sizes = dict(prunable_layers(self.model))
        knobs = [Knob(name, "bits", space.bits) for name in sizes] + [Knob(name, "sparsity", space.sparsity) for name in sizes]
        return Plan(knobs, sizes, drop_of)

    def recipe(self, state: dict[tuple[str, str], Any]) -> Recipe:
        base = self.space.quantizer.with_bits(max(self.space.quantizer.bits, 8))
        return Recipe(pruning=MagnitudePruning(sparsity=0.0), quantization=base, runtime=self.runtime,
                      layers=self.layer_settings(state))

    def score(self, row: dict[str, Any]) -> float:
        return row["size_bytes"]

    def retrainer(self, knob: Knob) -> Callable[[nn.Module, dict], nn.Module] | None:
        # Only a sparsity step is retried: the fine-tune trains float weights under pruning masks, and
        # learns nothing about a coarser width.
        if self.space.train_data is None or knob.axis != "sparsity":
            return None
        return self._finetuned

    def _finetuned(self, model: nn.Module, state: dict[tuple[str, str], Any]) -> nn.Module:
        """``model`` pruned to the trial's per-layer sparsities (masks kept) and trained briefly."""
        amounts = {layer: value for (layer, axis), value in state.items() if axis == "sparsity" and value > 0}
        pruned = prune(model, MagnitudePruning(sparsity=0.0), layer_sparsity=amounts)
        tuned = finetune(pruned, self.space.train_data, Training(epochs=self.space.finetune_epochs, seed=self.space.seed))
        bake_masks_(tuned)
        return tuned


class LatencySearch(GreedyDescent):
    """Channels (or attention heads) physically removed per group, fastest in ONNX Runtime within the budget."""

    timed = True  # every point timed against fp32 in the same rounds

    def __init__(self, model: nn.Module, space: SearchSpace) -> None:
        if not any(s < 0.95 for s in space.sparsity):
            raise ConfigError(
                f"sparsity={list(space.sparsity)!r}: channel pruning (objective='latency') takes ratios below 0.95."
            )
        super().__init__(model, space, space.runtime or Onnx())

    def plan(self, ev: Evaluator, goal: SearchGoal) -> Plan:
        # Channel removal has no cheap probe: moves are ordered by size alone (no drop_of).
        sizes = dict(prunable_layers(self.model))
        ratios = tuple(s for s in self.space.sparsity if s < 0.95)
        groups = _channel_groups(self.model, ev.samples.inputs.slice(0, 1), ratios)
        sizes.update({name: parameters for name, (parameters, _) in groups.items()})
        knobs = [Knob(name, "sparsity", values) for name, (_, values) in groups.items() if len(values) > 1]
        return Plan(knobs, sizes)

    def recipe(self, state: dict[tuple[str, str], Any]) -> Recipe:
        layers = tuple(item for item in self.layer_settings(state) if item.sparsity)  # 0 keeps the layer whole
        return Recipe(pruning=ChannelPruning(ratio=0.0), runtime=self.runtime, layers=layers)

    def score(self, row: dict[str, Any]) -> float:
        # the inverse of the speedup, paired with the baseline in the same rounds (robust to noise)
        return 1.0 / max(row.get("speedup") or 1e-9, 1e-9)


def _channel_groups(model: nn.Module, example: Any, ratios: tuple[float, ...]) -> dict[str, tuple[int, tuple[float, ...]]]:
    """The groups channel pruning may shrink (channels, or an attention module's heads), one knob each:
    ``{name: (parameters, the ratios that leave it at least one channel or head)}``."""
    out = {}
    for g in prunable_groups(model, example):
        if g.status != "prunable":
            continue
        fits = [r for r in ratios if (math.ceil(r * g.size) < g.size if g.kind == "heads" else int(g.size * (1 - r)) >= 1)]
        out[g.name] = (g.parameters, tuple(fits))
    return out


class Int8Search:
    """Real int8 with the sensitive layers kept float: ``int8_search.search_int8`` behind the strategy interface.

    ``bits``, ``sparsity`` and ``quantization`` do not apply; either objective does.
    """

    def __init__(self, model: nn.Module, space: SearchSpace) -> None:
        if space.train_data is not None:
            raise ConfigError(
                f"search with runtime={space.runtime!r} chooses which layers stay float and does not fine-tune; drop "
                "train_data=, or search a simulated quantizer (runtime=None) to fine-tune."
            )
        if not isinstance(model, nn.Module):
            raise ConfigError(f"search needs the PyTorch model (it keeps named layers float); got {type(model).__name__}.")
        self.model, self.space = model, space
        self.timed = space.objective == "latency"

    def run(self, ev: Evaluator, baseline: Point, goal: SearchGoal) -> SearchResult:
        return search_int8(
            self.model, ev, self.space.runtime, objective=self.space.objective,
            max_accuracy_drop=goal.max_accuracy_drop, time_budget_s=goal.clock.remaining(),
            confidence=goal.confidence, progress=goal.progress,
        )


# Runtimes that have a search of their own, whatever the objective (keyed by config type) ...
_BY_RUNTIME: dict[type[Runtime], type[Int8Search]] = {Int8Dynamic: Int8Search, Int8Static: Int8Search}
# ... and the objectives' strategies for every other runtime: one for each of ``search_setup.OBJECTIVES``
# (the names ``SearchConfig`` accepts; a new objective is added to both).
_BY_OBJECTIVE: dict[str, type[GreedyDescent]] = {"size": SizeSearch, "latency": LatencySearch}


def strategy_for(model: nn.Module, space: SearchSpace) -> SearchStrategy:
    """The strategy for ``space``'s runtime and objective; it refuses what it cannot search (``ConfigError``),
    ``train_data`` included where nothing would read it (only the size search fine-tunes)."""
    strategy = _strategy(model, space)
    if space.train_data is not None and not isinstance(strategy, SizeSearch):
        runtime = "" if space.runtime is None else f" and runtime={space.runtime!r}"
        raise ConfigError(
            f"search with objective={space.objective!r}{runtime} does not fine-tune: train_data= is read only by the "
            "size search of a simulated quantizer (runtime=None), which retries a sparsity step after fine-tuning. "
            "Drop train_data=, or fine-tune the result's model with finetune()."
        )
    return strategy


def _strategy(model: nn.Module, space: SearchSpace) -> SearchStrategy:
    if isinstance(space.runtime, WeightOnly) and space.objective == "size":
        return WeightOnlySearch(model, space.runtime)  # how the weights are fitted, then how many bytes
    for runtime_type, strategy in _BY_RUNTIME.items():
        if isinstance(space.runtime, runtime_type):
            return strategy(model, space)
    return _BY_OBJECTIVE[space.objective](model, space)
