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
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from squeezelab.engine.core.arguments import count, finite_number, grid_lists
from squeezelab.engine.core.errors import ConfigError
from squeezelab.engine.explore.evaluation import Evaluator, paired_drop_bound
from squeezelab.engine.measurement.point import Point, Settings
from squeezelab.engine.core.pruners import ChannelPruning, MagnitudePruning
from squeezelab.engine.core.quantizers import QuantizationConfig
from squeezelab.engine.core.recipe import LayerSetting, Recipe
from squeezelab.engine.core.runtimes import Int8Dynamic, Int8Static, Onnx, Runtime, Simulated, WeightOnly

__all__ = ["search", "SearchResult"]


@dataclass
class SearchResult:
    """What ``search`` found: never empty.

    Attributes:
        recipe: the best recipe within the budget (``Recipe()`` if nothing smaller held).
        model: the model the recipe applies to (the caller's, or a fine-tuned copy).
        row: its measured figures (``value`` and ``drop`` of the metric, also under the metric's
            own name, ``size_bytes``, ``latency_ms``, ...); ``point`` the measured ``Point``.
        trail: a DataFrame of every evaluation, in order, with ``accepted`` and ``drop_bound``.
        stopped: ``"converged"`` (no move left) or ``"time budget"``.
        elapsed_s: wall time of the search.
        held_out: the recipe measured on ``validation_data``, when given.
    """

    recipe: Recipe
    model: nn.Module
    row: dict[str, Any]
    trail: Any
    stopped: str
    elapsed_s: float
    baseline: dict[str, Any] = field(default_factory=dict)
    held_out: dict[str, Any] | None = None
    point: Point | None = None

    def __repr__(self) -> str:
        r = self.row
        metric = self.point.metric if self.point is not None else "accuracy"
        shown = _figure(self.point, r["value"], r["drop"])
        return (
            f"SearchResult({self.recipe.label}: {metric} {shown}, "
            f"{r['size_bytes']:,} bytes ({r['compression']:.2f}x), {len(self.trail)} evaluations, "
            f"stopped: {self.stopped}, {self.elapsed_s:.1f} s)"
        )


def _figure(point: Point | None, value: float, drop: float) -> str:
    """``97.78 % (drop 0.22 pp)`` for a percentage metric, ``0.9912 (drop 0.0088)`` otherwise: one unit each."""
    if point is not None and not point.percent:
        return f"{value:.4f} (drop {drop:.4f})"
    return f"{value * 100:.2f} % (drop {drop * 100:.2f} pp)"


def _row(point: Point, baseline: Point, move: str) -> dict[str, Any]:
    """One trail row: the point's figures, its drop against the search's baseline, the move."""
    drop = baseline.value - point.value
    row = {**point.to_row(), "value": point.value, "drop": drop, f"{point.metric_key}_drop": drop, "move": move}
    row["compression"] = baseline.size_bytes / point.size_bytes
    row["point"] = point
    return row


@dataclass(frozen=True)
class _Knob:
    layer: str
    axis: str  # "bits" or "sparsity"
    values: tuple  # from gentlest to most aggressive


def _recipe(objective: str, quantizer: QuantizationConfig, state: dict[tuple[str, str], Any], runtime: Runtime) -> Recipe:
    per_layer: dict[str, dict[str, Any]] = {}
    for (layer, axis), value in state.items():
        per_layer.setdefault(layer, {})[axis] = value
    layers = tuple(
        LayerSetting(name=name, bits=v.get("bits"), sparsity=v.get("sparsity")) for name, v in per_layer.items()
    )
    if objective == "latency":
        layers = tuple(item for item in layers if item.sparsity)  # 0 keeps the layer whole
        return Recipe(pruning=ChannelPruning(ratio=0.0), runtime=runtime, layers=layers)
    base = quantizer.with_bits(max(quantizer.bits, 8))
    return Recipe(pruning=MagnitudePruning(sparsity=0.0), quantization=base, runtime=runtime, layers=layers)


def _channel_groups(model: nn.Module, example: Any, ratios: tuple[float, ...]) -> dict[str, tuple[int, tuple[float, ...]]]:
    """The groups channel pruning may shrink (channels, or an attention module's heads), one knob each:
    ``{name: (parameters, the ratios that leave it at least one channel or head)}``."""
    import math

    from squeezelab.engine.pruning.structured import prunable_groups

    out = {}
    for g in prunable_groups(model, example):
        if g.status != "prunable":
            continue
        fits = [r for r in ratios if (math.ceil(r * g.size) < g.size if g.kind == "heads" else int(g.size * (1 - r)) >= 1)]
        out[g.name] = (g.parameters, tuple(fits))
    return out


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
            (``bits``, ``sparsity`` and ``quantization`` do not apply; see ``engine.int8_search``).
            ``WeightOnly(...)`` with ``objective="latency"`` (channel pruning, then 4/8-bit weights).
        train_data: enables fine-tuning (objective ``"size"``): a sparsity step that breaks the
            budget is retried after ``finetune_epochs`` of training of the pruned model (masks
            kept); the result's ``model`` is then the fine-tuned copy the recipe applies to.
        validation_data: measure the final recipe on it as well (``held_out``).
        confidence: a step is kept only if the one-sided upper bound of its accuracy drop
            (paired by sample, at this confidence) is within budget, so the choice does not
            overfit the noise of ``data``; 0 judges the plain measured drop.
        settings: how to measure (``Settings``); keyword overrides such as ``metric=`` (any
            per-sample metric: ``cosine_to_baseline`` for an embedding model) change single fields.
        cache: as for ``sweep``; every evaluation is cached, so a repeated search is fast.
    """
    from squeezelab.engine.core.layers import prunable_layers
    from squeezelab.engine.explore.sensitivity import layer_sensitivity
    from squeezelab.engine.train.finetune import finetune

    started = time.monotonic()
    if objective not in ("size", "latency"):
        raise ConfigError(f"objective={objective!r}; use 'size' or 'latency'.")
    max_accuracy_drop = finite_number("max_accuracy_drop", max_accuracy_drop, low=0, hint=" (0.01 = 1 point)")
    confidence = finite_number(
        "confidence", confidence, low=0, high=1, high_open=True, hint=" (0.9 = 90% one-sided bound; 0 = plain drop)"
    )
    time_budget_s = finite_number("time_budget_s", time_budget_s, low=0, low_open=True, hint=" seconds")
    finetune_epochs = count("finetune_epochs", finetune_epochs, low=1, hint=" (passes over train_data)")
    from squeezelab.engine.explore.sweep import weight_quantizer

    quantizer = weight_quantizer(quantization, width_based=True)
    bits, sparsity = grid_lists(bits, sparsity, layout="each")
    for b in bits:  # every width must suit the quantizer: refused now, not after the baseline ran
        quantizer.with_bits(b)
    if objective == "latency" and not any(s < 0.95 for s in sparsity):
        raise ConfigError(f"sparsity={list(sparsity)!r}: channel pruning (objective='latency') takes ratios below 0.95.")
    if isinstance(runtime, (Int8Dynamic, Int8Static)):  # real int8: which layers stay float (engine/explore/int8_search.py)
        return _search_int8(model, data, runtime, objective, max_accuracy_drop, time_budget_s, confidence,
                            train_data, settings, cache, progress, overrides)
    runtime = runtime or (Simulated(coding="huffman") if objective == "size" else Onnx())
    if isinstance(runtime, WeightOnly) and objective != "latency":
        # MatMulNBits takes one width for the whole graph, and a size search chooses a width per layer.
        raise ConfigError(
            f"search(runtime={runtime.label}) needs objective='latency' (channels removed per layer, then "
            "every Linear stored by WeightOnly); objective='size' chooses per-layer widths of a simulated "
            "quantizer. For one 4-bit model, compress(model, Recipe(runtime=WeightOnly())) or sweep(..., runtime='weight-only')."
        )
    bits = tuple(sorted(set(bits), reverse=True))
    sparsity = tuple(sorted(set(sparsity)))
    repeats = 20 if objective == "latency" else 0
    ev = Evaluator(model, data, settings, cache=cache, **{**overrides, "rounds": repeats})
    base_point = ev.baseline()
    drop_of: dict[tuple[str, str, Any], float] = {}
    if objective == "size":  # channel removal has no cheap probe: latency moves are ordered by size alone
        # Probing gets at most half the time budget; probes not measured by then count as harmless.
        sens = layer_sensitivity(
            model, data, bits=bits, sparsity=[s for s in sparsity if s > 0], quantization=quantizer, evaluator=ev,
            progress=False, deadline=started + time_budget_s / 2,
        )
        drop_of = {(r.layer, r.axis, r.value): max(r.drop, 0.0) for r in sens.itertuples() if r.drop == r.drop}
    sizes = dict(prunable_layers(model))

    if objective == "size":
        knobs = [_Knob(name, "bits", bits) for name in sizes] + [_Knob(name, "sparsity", sparsity) for name in sizes]
    else:
        groups = _channel_groups(model, ev.samples.inputs.slice(0, 1), tuple(s for s in sparsity if s < 0.95))
        sizes.update({name: parameters for name, (parameters, _) in groups.items()})
        knobs = [_Knob(name, "sparsity", values) for name, (_, values) in groups.items() if len(values) > 1]
    state = {(k.layer, k.axis): k.values[0] for k in knobs}
    trail: list[dict[str, Any]] = []
    work_model, work_ev = model, ev

    slowest = [0.0]  # the longest evaluation so far: a new one starts only if it can finish in time

    def measure(candidate: dict, how: str, evaluator: Evaluator) -> dict[str, Any]:
        began = time.monotonic()
        point = evaluator.evaluate(_recipe(objective, quantizer, candidate, runtime))
        slowest[0] = max(slowest[0], time.monotonic() - began)
        row = _row(point, base_point, how)
        row["drop_bound"] = paired_drop_bound(base_point, point, confidence)  # against the caller's model
        trail.append(row)
        return row

    def score(row: dict[str, Any]) -> float:
        # latency: the inverse of the speedup, paired with the baseline in the same rounds (robust to noise)
        return row["size_bytes"] if objective == "size" else 1.0 / max(row.get("speedup") or 1e-9, 1e-9)

    best_row = {**_row(base_point, base_point, "fp32 baseline"), "speedup": 1.0}
    best_recipe, best_model = Recipe(), model
    current = measure(state, "start", ev)
    current["accepted"] = current["drop_bound"] <= max_accuracy_drop
    if current["accepted"] and score(current) <= score(best_row):
        best_row, best_recipe = current, _recipe(objective, quantizer, state, runtime)
    # knob -> how many steps had been kept when it broke the budget. Accuracy is not monotone in
    # compression (coarser weights sometimes generalise better), so a knob ruled out earlier gets
    # one more try after other steps have been kept; the search ends when no such retry is left.
    ruled_out: dict[tuple[str, str], int] = {}
    kept = 0
    stopped = "converged"
    from tqdm.auto import tqdm

    bar = tqdm(desc="search", disable=not progress, unit="eval")
    while True:
        if time.monotonic() - started + slowest[0] > time_budget_s:
            stopped = "time budget"
            break
        moves = []
        for k in knobs:
            key = (k.layer, k.axis)
            i = k.values.index(state[key])
            if key in ruled_out or i + 1 >= len(k.values):
                continue
            new = k.values[i + 1]
            cost = drop_of.get((k.layer, k.axis, new), 0.0) - drop_of.get((k.layer, k.axis, state[key]), 0.0)
            if k.axis == "bits":
                gain = sizes[k.layer] * (state[key] - new) / 8
            else:
                width = state.get((k.layer, "bits"), 8)
                gain = sizes[k.layer] * (new - state[key]) * width / 8
            moves.append((gain / (max(cost, 0.0) + 1e-3), k, new))
        if not moves:
            retry = [key for key, at in ruled_out.items() if at < kept]
            if not retry:
                break
            for key in retry:
                del ruled_out[key]
            continue
        moves.sort(key=lambda m: -m[0])
        _, knob, new = moves[0]
        trial = {**state, (knob.layer, knob.axis): new}
        how = f"{knob.layer} {knob.axis} {state[(knob.layer, knob.axis)]} -> {new}"
        row = measure(trial, how, work_ev)
        bar.update()
        ok = row["drop_bound"] <= max_accuracy_drop
        out_of_time = time.monotonic() - started > time_budget_s
        if not ok and train_data is not None and knob.axis == "sparsity" and objective == "size" and not out_of_time:
            row["accepted"] = False
            tuned = _finetuned(work_model, trial, train_data, finetune_epochs, seed, finetune)
            tuned_ev = ev.for_model(tuned)
            row = measure(trial, how + " + fine-tune", tuned_ev)
            ok = row["drop_bound"] <= max_accuracy_drop
            if ok:
                work_model, work_ev = tuned, tuned_ev
        row["accepted"] = ok
        if ok:
            state = trial
            kept += 1
            if score(row) <= score(best_row):
                best_row, best_recipe, best_model = row, _recipe(objective, quantizer, state, runtime), work_model
        else:
            ruled_out[(knob.layer, knob.axis)] = kept
    bar.close()
    import pandas as pd

    held_out = None
    if validation_data is not None:
        base_ev = Evaluator(model, validation_data, ev.settings, cache=ev.cache)
        check = base_ev.for_model(best_model)
        held_out = _row(check.evaluate(best_recipe), base_ev.baseline(), "held out")
    key = base_point.metric_key
    columns = ["move", "accepted", "label", key, f"{key}_drop", "value", "drop", "drop_bound", "size_bytes", "compression", "latency_ms", "speedup"]
    table = pd.DataFrame([{k: v for k, v in row.items() if k != "point"} for row in trail])
    table = table[list(dict.fromkeys(c for c in columns if c in table)) + ["recipe"]]
    table.attrs.update({"metric": base_point.metric, "metric_key": key, "percent": base_point.percent})
    return SearchResult(
        recipe=best_recipe,
        model=best_model,
        row=best_row,
        trail=table,
        stopped=stopped,
        elapsed_s=time.monotonic() - started,
        baseline=_row(base_point, base_point, "fp32 baseline"),
        held_out=held_out,
        point=best_row.get("point"),
    )


def _search_int8(
    model: nn.Module, data: Any, runtime: Int8Dynamic | Int8Static, objective: str, max_accuracy_drop: float,
    time_budget_s: float, confidence: float, train_data: Any, settings: Settings | None, cache: Any, progress: bool,
    overrides: dict[str, Any],
) -> SearchResult:
    from squeezelab.engine.explore.int8_search import search_int8

    if train_data is not None:
        raise ConfigError(
            f"search with runtime={runtime!r} chooses which layers stay float and does not fine-tune; drop "
            "train_data=, or search a simulated quantizer (runtime=None) to fine-tune."
        )
    if not isinstance(model, nn.Module):
        raise ConfigError(f"search needs the PyTorch model (it keeps named layers float); got {type(model).__name__}.")
    repeats = 20 if objective == "latency" else 0
    ev = Evaluator(model, data, settings, cache=cache, **{**overrides, "rounds": repeats})
    return search_int8(
        model, ev, runtime, objective=objective, max_accuracy_drop=max_accuracy_drop, time_budget_s=time_budget_s,
        confidence=confidence, progress=progress,
    )


def _finetuned(model: nn.Module, state: dict, train_data: Any, epochs: int, seed: int, finetune: Any) -> nn.Module:
    """``model`` pruned to the trial's per-layer sparsities (masks kept) and trained briefly."""
    from squeezelab.engine.pruning.prune import bake_masks_, prune

    amounts = {layer: value for (layer, axis), value in state.items() if axis == "sparsity" and value > 0}
    pruned = prune(model, MagnitudePruning(sparsity=0.0), layer_sparsity=amounts)
    tuned = finetune(pruned, train_data, epochs=epochs, seed=seed)
    bake_masks_(tuned)
    return tuned
