"""What the explorer's controls offer, what they refuse, and the recipe a position of them means.

The controls are ipywidgets; their choices are the string table of this edge
(value objects inside the engine): each string maps to ``grid_recipe``'s names,
or to a runtime config in ``RUNTIME_CONFIGS``. Arguments the controls could not
show are refused with a ``ConfigError`` before anything is measured: a slider
would clamp a value silently.
"""

from __future__ import annotations

from typing import Any

from squeezelab.engine.core.arguments import count, fraction, scalar, width
from squeezelab.engine.core.errors import ConfigError
from squeezelab.engine.core.recipe import Recipe
from squeezelab.engine.core.runtimes import Int8Dynamic
from squeezelab.engine.explore.sweep import grid_recipe

__all__ = [
    "QUANTIZATION_CHOICES", "PRUNING_CHOICES", "RUNTIME_CHOICES", "ONNX_RUNTIME_CHOICES", "RUNTIME_CONFIGS",
    "BITS_RANGE", "SPARSITY_RANGE", "check_arguments", "control_recipe",
]

QUANTIZATION_CHOICES = [
    ("linear, symmetric", "linear-symmetric"),
    ("linear, affine", "linear-affine"),
    ("linear, per-tensor", "linear-pertensor"),
    ("k-means (weight sharing)", "kmeans"),
    ("fixed point", "fixed-point"),
    ("float16", "float16"),
]
PRUNING_CHOICES = [
    ("magnitude (unstructured)", "magnitude"),
    ("structured (channels removed)", "structured"),
    ("N:M (of 4)", "n:m"),
    ("structured, attention heads too", "structured-heads"),
    ("whole layers removed", "layers"),
]
RUNTIME_CHOICES = [
    ("simulated (packed file)", "simulated"),
    ("simulated, Deep-Compression coded", "simulated-huffman"),
    ("int8 dynamic (ONNX Runtime)", "int8-dynamic"),
    ("int8 static (ONNX Runtime)", "int8-static"),
    ("int8 dynamic + embeddings (ONNX Runtime)", "int8-dynamic-embeddings"),
    ("4/8-bit weight-only (ONNX Runtime MatMulNBits)", "weight-only"),
]
# Choices that are not one of grid_recipe's runtime names. A transformer's word embeddings can hold
# most of its weights; plain int8-dynamic refuses to leave them float32 silently, this choice
# quantizes them too (the recipe a sweep with the same runtime config measures: a cache hit).
RUNTIME_CONFIGS = {"int8-dynamic-embeddings": Int8Dynamic(op_types=("MatMul", "Gemm", "Gather"))}
# An ONNX file has no PyTorch layers to prune or to quantize in simulation: ONNX Runtime's choices
# only, float16 among them (for a PyTorch model it is a quantization choice).
ONNX_RUNTIME_CHOICES = [
    ("int8 dynamic (ONNX Runtime)", "int8-dynamic"),
    ("int8 dynamic + embeddings (ONNX Runtime)", "int8-dynamic-embeddings"),
    ("int8 static (ONNX Runtime)", "int8-static"),
    ("float16 (ONNX Runtime)", "float16"),
]
BITS_RANGE = (2, 8)  # the bit-width slider
SPARSITY_RANGE = (0.0, 0.95)  # the sparsity slider


def _choice(name: str, value: Any, choices: list[tuple[str, str]]) -> str:
    allowed = [v for _, v in choices]
    if not isinstance(value, str) or value not in allowed:
        raise ConfigError(f"{name}={value!r} is not one of the explorer's {name} choices: {', '.join(map(repr, allowed))}.")
    return value


def check_arguments(
    bits: Any, sparsity: Any, quantization: Any, pruning: Any, runtime: Any, overrides: dict[str, Any], onnx: bool
) -> tuple[int, float]:
    """Refuse what the controls cannot show, before anything is measured (a slider would clamp it silently)."""
    _choice("quantization", quantization, QUANTIZATION_CHOICES)
    _choice("pruning", pruning, PRUNING_CHOICES)
    if not onnx:
        _choice("runtime", runtime, RUNTIME_CHOICES)
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
        _check_onnx_arguments(sparsity, quantization, pruning, runtime)
    return bits, sparsity


def _check_onnx_arguments(sparsity: Any, quantization: str, pruning: str, runtime: Any) -> None:
    """An ONNX file takes ONNX Runtime's choices; pruning and simulated widths need the PyTorch model."""
    allowed = [v for _, v in ONNX_RUNTIME_CHOICES]
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


def control_recipe(bits: int, sparsity: float, quantization: str, pruning: str, runtime: str) -> Recipe:
    """The ``Recipe`` of one position of the controls (``ConfigError`` for an impossible combination).

    int8 runtimes store 8-bit weights whatever the slider says; weight-only takes the slider's 4 or 8
    (other widths cannot be built: ``ConfigError``); float16 stores 16; N:M pruning
    snaps to the nearest sparsity it can give (0, 25, 50 or 75 % of 4).

    Examples:
        >>> control_recipe(3, 0.45, "kmeans", "n:m", "simulated").label
        '2:4-sparse + kmeans3 (simulated)'
        >>> control_recipe(4, 0.0, "linear-symmetric", "magnitude", "float16").label
        'float16'
    """
    if runtime == "float16":  # an ONNX file's float16 choice: float16 weights, run by ONNX Runtime
        bits, quantization, runtime = 16, "float16", "simulated"
    elif runtime.startswith("int8"):
        bits = 8  # ONNX Runtime's int8 path chooses its own 8-bit weights
    elif quantization == "float16":
        bits = 16
    sparsity = round(sparsity, 4)
    if pruning == "n:m":
        sparsity = min((0.0, 0.25, 0.5, 0.75), key=lambda s: abs(s - sparsity))
    return grid_recipe(bits, sparsity, quantization=quantization, pruning=pruning, runtime=RUNTIME_CONFIGS.get(runtime, runtime))
