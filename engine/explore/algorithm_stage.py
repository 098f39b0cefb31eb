"""The first stage of an int8 search: how every layer is quantized, before any layer is kept float.

Keeping a layer float buys fidelity with speed (on all-MiniLM-L6-v2, 21 of 36 Linear layers float to
gain 0.005 cosine cost 40 % of the int8 speed-up). The algorithms that change how a layer is quantized
cost nothing at run time, so the search tries them first, every layer in int8:

- the fidelity steps (``Recipe.transforms``): for a transformer, smoothing off, chosen per group
  ("auto"), or at a fixed strength 0.5 / 0.8 (dynamic int8 only when calibration data is given:
  smoothing measures activations); for a CNN under static int8, cross-layer equalisation and bias
  correction, alone and together, and AdaRound with bias correction (the best all-int8 steps measured
  on the ResNet-18 layout and EfficientNet-Lite0, ``benchmarks/int8_cnn.py``), where their appliers
  are registered;
- static int8's calibration: min-max, percentile (99.999) and entropy.

``algorithm_candidates`` lists them, the runtime's own default first. The search varies one axis at a
time (the steps with the runtime's calibration, then the calibrations with the best steps), probing
each on the subsample, and verifies the best on all the data beside the default; the better of the
two on all the data is where the float-layer descent starts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from torch import nn

from squeezelab.engine.core.recipe import Recipe
from squeezelab.engine.core.runtimes import Entropy, Int8Dynamic, Int8Static, MinMax, Percentile, Runtime
from squeezelab.engine.core.transforms import AdaRound, BiasCorrection, Equalization, Smoothing, Transform
from squeezelab.engine.quantization.transforms import default_transforms, has_applier, transformer_like

__all__ = ["AlgorithmChoice", "transform_options", "calibration_options", "choose_algorithms"]


@dataclass
class AlgorithmChoice:
    """What the stage chose, what it tried (label -> probe value) and why."""

    recipe: Recipe
    tried: dict[str, float]
    why: str

    def to_dict(self) -> dict[str, Any]:
        return {"chosen": self.recipe.label, "tried": dict(self.tried), "why": self.why}


def transform_options(model: nn.Module, runtime: Runtime, has_calibration: bool) -> list[tuple[Transform, ...]]:
    """The fidelity steps worth trying on ``model``: the default ``compress`` resolves first, then the others."""
    default, _ = default_transforms(model, runtime, has_calibration)
    options: list[tuple[Transform, ...]] = [default]
    if transformer_like(model) and (isinstance(runtime, Int8Static) or has_calibration):
        options += [(), (Smoothing(),), (Smoothing(alpha=0.5),), (Smoothing(alpha=0.8),)]
    elif isinstance(runtime, Int8Static):
        cnn = [step for step in (Equalization(), BiasCorrection()) if has_applier(type(step))]
        options += [()] + [(step,) for step in cnn] + ([tuple(cnn)] if len(cnn) > 1 else [])
        if has_applier(AdaRound) and has_applier(BiasCorrection):
            options.append((AdaRound(), BiasCorrection()))
    return list(dict.fromkeys(options))


def calibration_options(runtime: Runtime) -> list[Runtime]:
    """Static int8 with each calibration (the runtime's own first); other runtimes as they are."""
    if not isinstance(runtime, Int8Static):
        return [runtime]
    methods = [runtime.calibration, MinMax(), Percentile(), Entropy()]
    unique = list(dict.fromkeys(methods))
    return [replace(runtime, calibration=method) for method in unique]


def choose_algorithms(
    model: nn.Module,
    runtime: Int8Dynamic | Int8Static,
    has_calibration: bool,
    probe: Callable[[Recipe, str], dict[str, Any] | None],
    verify: Callable[[Recipe, str], dict[str, Any] | None],
    better: Callable[[dict[str, Any], dict[str, Any]], bool],
) -> AlgorithmChoice:
    """Try the algorithms one axis at a time; returns the all-int8 recipe the descent should start from.

    ``probe(recipe, move)`` measures on the subsample and ``verify(recipe, move)`` on all the data (each a
    trail row, or None when the time budget ran out); ``better(a, b)`` says whether row ``a`` beats row
    ``b`` (higher metric value on the probes; on all the data, within budget first, then fidelity).
    """
    steps = transform_options(model, runtime, has_calibration)
    runtimes = calibration_options(runtime)
    default = Recipe(runtime=runtime, transforms=steps[0])
    tried: dict[str, float] = {}
    if len(steps) == 1 and len(runtimes) == 1:
        return AlgorithmChoice(default, tried, "nothing else applies to this model and runtime")
    best, best_row = default, None
    for candidate in [Recipe(runtime=runtime, transforms=s) for s in steps]:
        best, best_row = _tried(candidate, probe, tried, best, best_row)
    for rt in runtimes[1:]:
        best, best_row = _tried(Recipe(runtime=rt, transforms=best.transforms), probe, tried, best, best_row)
    if best == default:
        return AlgorithmChoice(default, tried, "the default measured best on the probes")
    mine, theirs = verify(best, f"algorithms: {best.label} (best probe), all the data"), verify(default, "start: all int8")
    if mine is not None and theirs is None and mine["accepted"]:
        # The default could not be measured in time, the best probe was and holds: starting from the default
        # would leave the search nothing measured to return (the fp32 baseline) though an int8 answer is known.
        return AlgorithmChoice(best, tried, "the time budget ran out before the default was measured on all the "
                                            "data; the best probe was, within the drop budget")
    if mine is None or theirs is None:
        return AlgorithmChoice(default, tried, "the time budget ran out before the best probe was verified")
    if better(mine, theirs):
        return AlgorithmChoice(best, tried, "best on the probes, and better than the default on all the data")
    return AlgorithmChoice(default, tried, f"{best.label} led on the probes but not on all the data")


def _tried(candidate: Recipe, probe: Callable, tried: dict[str, float], best: Recipe, best_row: Any) -> tuple[Recipe, Any]:
    if candidate.label in tried:
        return best, best_row
    row = probe(candidate, f"algorithms: {candidate.label}")
    if row is None:
        return best, best_row
    tried[candidate.label] = row["value"]
    if best_row is None or row["value"] > best_row["value"]:
        return candidate, row
    return best, best_row
