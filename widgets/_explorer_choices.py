"""What the explorer's controls offer, what they refuse, and the recipe a position of them means.

The controls are ipywidgets; their options and labels are the engine's table of strings
(``squeezelab.engine.core.choices``; value objects inside the engine), and a position of them
becomes a recipe through ``grid_recipe``, as in ``sweep``. Arguments the controls could not
show are refused with a ``ConfigError`` before anything is measured: a slider
would clamp a value silently; an old spelling (an alias in the table) is read as its choice.
"""

from __future__ import annotations

from typing import Any

from squeezelab.engine.core.arguments import count, fraction, scalar, width
from squeezelab.engine.core.errors import ConfigError
from squeezelab.engine.core import choices
from squeezelab.engine.core.recipe import Recipe
from squeezelab.engine.core.runtimes import Int8Dynamic, Int8Static
from squeezelab.engine.explore.grid import Grid
from squeezelab.engine.explore.sweep import grid_recipe

__all__ = [
    "QUANTIZATION_CHOICES", "PRUNING_CHOICES", "RUNTIME_CHOICES", "ONNX_RUNTIME_CHOICES",
    "BITS_RANGE", "SPARSITY_RANGE", "check_arguments", "control_recipe", "start_of",
]

# The dropdowns' (label, value) pairs, read from the engine's one table of strings.
QUANTIZATION_CHOICES = choices.options("quantization")
PRUNING_CHOICES = choices.options("pruning")
RUNTIME_CHOICES = choices.options("runtime")
# An ONNX file has no PyTorch layers to prune or to quantize in simulation: ONNX Runtime's whole
# recipes only, float16 among them (for a PyTorch model it is a quantization choice); fp32 is the
# baseline, measured whatever the choice.
ONNX_RUNTIME_CHOICES = [(label, name) for label, name in choices.options("recipe") if name != "fp32"]
BITS_RANGE = (2, 8)  # the bit-width slider
SPARSITY_RANGE = (0.0, 0.95)  # the sparsity slider


def _choice(kind: choices.Kind, value: Any, options: list[tuple[str, str]]) -> str:
    """The dropdown value ``value`` names (an old spelling read as its choice); the table's error otherwise."""
    return choices.canonical_name(kind, value, allowed=[name for _, name in options], otherwise="")


def start_of(grid: Grid) -> tuple[Any, Any, Any, Any, Any]:
    """Where the controls start: ``(bits, sparsity, quantization, pruning, runtime)`` of a ``Grid`` with one
    value each (bits 8 and sparsity 0 when left out); a grid of several points or with ``recipes`` is refused."""
    if grid.recipes:
        raise ConfigError(
            f"Grid(recipes=...) has {len(grid.recipes)} recipe(s): the explorer starts from one position of its "
            "controls; pass bits, sparsity, quantization, pruning and runtime (or sweep the recipes)."
        )
    one = {}
    for name, default in (("bits", 8), ("sparsity", 0.0)):
        values = getattr(grid, name)
        if values is not None and len(values) != 1:
            raise ConfigError(
                f"{name}={list(values)!r}: the explorer starts at one position of its slider; pass one value "
                f"(e.g. {name}={values[0]!r}), and sweep to measure several."
            )
        one[name] = default if values is None else values[0]
    return one["bits"], one["sparsity"], grid.quantization, grid.pruning, grid.runtime


def check_arguments(
    bits: Any, sparsity: Any, quantization: Any, pruning: Any, runtime: Any, overrides: dict[str, Any], onnx: bool
) -> tuple[int, float, str, str, str]:
    """Refuse what the controls cannot show, before anything is measured (a slider would clamp it silently).

    Returns ``(bits, sparsity, quantization, pruning, runtime)`` as the controls hold them: plain
    numbers, and the dropdowns' values (an alias such as ``"int8-dynamic-embeddings"`` read as its choice).
    """
    quantization = _choice("quantization", quantization, QUANTIZATION_CHOICES)
    pruning = _choice("pruning", pruning, PRUNING_CHOICES)
    if not onnx:
        runtime = _choice("runtime", runtime, RUNTIME_CHOICES)
    low, high = BITS_RANGE
    bits = width(scalar(bits))
    if not low <= bits <= high:
        raise ConfigError(f"bits={bits} is outside the bit-width slider's range {low}..{high}; pass one of {list(range(low, high + 1))}.")
    sparsity = fraction(scalar(sparsity))
    if not SPARSITY_RANGE[0] <= sparsity <= SPARSITY_RANGE[1]:
        raise ConfigError(f"sparsity={sparsity} is outside the sparsity slider's range 0..{SPARSITY_RANGE[1]}; pass a number in [0, 0.95].")
    for name in ("latency_repeats", "rounds"):
        if name in overrides:
            count(name, overrides[name], low=0, hint=" (timed rounds per point; 0 skips latency)")
    if onnx:
        runtime = _check_onnx_arguments(sparsity, quantization, pruning, runtime)
    return bits, sparsity, quantization, pruning, runtime


def _check_onnx_arguments(sparsity: Any, quantization: str, pruning: str, runtime: Any) -> str:
    """An ONNX file takes ONNX Runtime's choices (returned as the dropdown's value); pruning and simulated widths need the PyTorch model."""
    allowed = [v for _, v in ONNX_RUNTIME_CHOICES]
    runtime = choices.ALIASES.get(runtime, runtime) if isinstance(runtime, str) else runtime
    if not isinstance(runtime, str) or runtime not in allowed:
        raise ConfigError(
            f"runtime={runtime!r} is not one of the explorer's runtime choices for an ONNX file: "
            f"{', '.join(map(repr, allowed))}. The simulated runtimes need the PyTorch model: pass the nn.Module."
        )
    asked = {"sparsity": sparsity != 0, "quantization": quantization != "linear-symmetric", "pruning": pruning != "magnitude"}
    for name, changed in asked.items():
        if changed:
            value = {"sparsity": sparsity, "quantization": quantization, "pruning": pruning}[name]
            raise ConfigError(
                f"{name}={value!r} needs the PyTorch model: an ONNX file cannot be pruned or quantized to other "
                "widths here. Pass the nn.Module, or leave the argument out and choose an ONNX Runtime runtime."
            )
    return runtime


def control_recipe(bits: int, sparsity: float, quantization: str, pruning: str, runtime: str) -> Recipe:
    """The ``Recipe`` of one position of the controls (``ConfigError`` for an impossible combination).

    int8 runtimes store 8-bit weights whatever the slider says; weight-only takes the slider's 4 or 8
    (other widths cannot be built: ``ConfigError``); float16 stores 16; N:M pruning
    snaps to the nearest sparsity it can give (0, 25, 50 or 75 % of 4). A whole-recipe choice of an
    ONNX file that is no runtime (``"float16"``) is the table's recipe (``choices.RECIPES``).

    Examples:
        >>> control_recipe(3, 0.45, "kmeans", "n:m", "simulated").label
        '2:4-sparse + kmeans3 (simulated)'
        >>> control_recipe(4, 0.0, "linear-symmetric", "magnitude", "float16").label
        'float16'
    """
    if runtime in choices.names("recipe") and runtime not in choices.names("runtime"):
        return choices.resolve("recipe", runtime)  # an ONNX file's whole-recipe choice (float16), from the table
    if isinstance(choices.resolve("runtime", runtime), (Int8Dynamic, Int8Static)):
        bits = 8  # ONNX Runtime's int8 path chooses its own 8-bit weights
    elif quantization == "float16":
        bits = 16
    sparsity = round(sparsity, 4)
    if pruning == "n:m":
        sparsity = min((0.0, 0.25, 0.5, 0.75), key=lambda s: abs(s - sparsity))
    return grid_recipe(bits, sparsity, quantization=quantization, pruning=pruning, runtime=runtime)
