"""The strings users type for a method, a runtime or a recipe, and what each one means: the one table.

``sweep(quantization="kmeans", runtime="int8-static")``, the explorer's dropdowns and the
``squeezelab`` command's ``--quantization`` / ``--pruning`` / ``--runtime`` / ``--recipe`` all read
this table; inside the engine a choice is a config object, strings stop here. Each ``Choice`` holds
the string, the label a dropdown shows and the config it stands for:

* ``"quantization"``: a quantizer at its default width (a grid sets the width with ``with_bits``);
* ``"pruning"``: a pruning config at a default amount of 50 % (a grid sets its own amount);
* ``"runtime"``: how the compressed model runs;
* ``"recipe"``: a whole recipe (``--recipe NAME``, and the choices for an ONNX file, which has no
  PyTorch layers to prune or to quantize in simulation).

Old spellings stay accepted through ``ALIASES`` (one line each) without being offered again.
An unknown string raises ``ConfigError`` with one message, ``unknown_choice``'s, naming the allowed ones.

Examples:
    >>> resolve("runtime", "int8-static") == Int8Static()
    True
    >>> canonical_name("runtime", "int8-dynamic-embeddings")
    'int8-dynamic'
    >>> resolve("pruning", "random")
    Traceback (most recent call last):
    ...
    squeezelab.engine.core.errors.ConfigError: pruning='random'; use one of 'magnitude', 'structured', 'n:m', 'structured-heads', 'layers', or a pruning config such as ChannelPruning(ratio=0.5).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from squeezelab.engine.core.errors import ConfigError
from squeezelab.engine.core.pruners import ChannelPruning, LayerPruning, MagnitudePruning, NMPruning, PruningConfig
from squeezelab.engine.core.quantizers import FixedPoint, Float16, KMeansQuantization, LinearQuantization, PerTensor, QuantizationConfig
from squeezelab.engine.core.recipe import Recipe
from squeezelab.engine.core.runtimes import Int8Dynamic, Int8Static, Onnx, Runtime, Simulated, WeightOnly

__all__ = [
    "Choice", "Kind", "QUANTIZATIONS", "PRUNINGS", "RUNTIMES", "RECIPES", "ALIASES",
    "names", "options", "canonical_name", "resolve", "unknown_choice",
]

Kind = Literal["quantization", "pruning", "runtime", "recipe"]


@dataclass(frozen=True)
class Choice:
    """One string a user can type: ``name``, the ``label`` a dropdown shows, the ``config`` it means."""

    name: str
    label: str
    config: Any


QUANTIZATIONS: tuple[Choice, ...] = (
    Choice("linear-symmetric", "linear, symmetric", LinearQuantization(symmetric=True)),
    Choice("linear-affine", "linear, affine", LinearQuantization(symmetric=False)),
    Choice("linear-pertensor", "linear, per-tensor", LinearQuantization(granularity=PerTensor())),
    Choice("kmeans", "k-means (weight sharing)", KMeansQuantization()),
    Choice("fixed-point", "fixed point", FixedPoint()),
    Choice("float16", "float16", Float16()),
)
PRUNINGS: tuple[Choice, ...] = (
    Choice("magnitude", "magnitude (unstructured)", MagnitudePruning(sparsity=0.5)),
    Choice("structured", "structured (channels removed)", ChannelPruning(ratio=0.5)),
    Choice("n:m", "N:M (of 4)", NMPruning(n=2, m=4)),
    # a transformer's attention heads at the same ratio as its neurons
    Choice("structured-heads", "structured, attention heads too", ChannelPruning(ratio=0.5, heads=True)),
    Choice("layers", "whole layers removed", LayerPruning(ratio=0.5)),  # the fraction of removable blocks
)
RUNTIMES: tuple[Choice, ...] = (
    Choice("simulated", "simulated (packed file)", Simulated()),
    Choice("simulated-huffman", "simulated, Deep-Compression coded", Simulated(coding="huffman")),
    Choice("int8-dynamic", "int8 dynamic (ONNX Runtime)", Int8Dynamic()),
    Choice("int8-static", "int8 static (ONNX Runtime)", Int8Static()),
    # MatMulNBits at the grid's bits (4 or 8)
    Choice("weight-only", "4/8-bit weight-only (ONNX Runtime MatMulNBits)", WeightOnly()),
)
# Whole recipes ONNX Runtime runs on any ONNX file; fp32 is the baseline every comparison measures anyway.
RECIPES: tuple[Choice, ...] = (
    Choice("fp32", "fp32 (ONNX Runtime)", Recipe()),
    *(Choice(c.name, c.label, Recipe(runtime=c.config)) for c in RUNTIMES if isinstance(c.config, (Int8Dynamic, Int8Static))),
    Choice("float16", "float16 (ONNX Runtime)", Recipe(quantization=Float16(), runtime=Onnx())),
)
ALIASES: dict[str, str] = {
    "unstructured": "magnitude",
    "channels": "structured",
    "nm": "n:m",
    # Int8Dynamic() quantizes the embedding tables (Gather) by default: the old choice is the same recipe.
    "int8-dynamic-embeddings": "int8-dynamic",
}

_TABLES: dict[str, tuple[Choice, ...]] = {
    "quantization": QUANTIZATIONS, "pruning": PRUNINGS, "runtime": RUNTIMES, "recipe": RECIPES,
}
_CONFIG_TYPES: dict[str, type] = {
    "quantization": QuantizationConfig, "pruning": PruningConfig, "runtime": Runtime, "recipe": Recipe,
}
# What else the engine takes where it takes a string of the kind (the CLI's --recipe adds a recipe.toml file).
_OTHERWISE = {
    "quantization": "a config such as LinearQuantization(bits=4, symmetric=False)",
    "pruning": "a pruning config such as ChannelPruning(ratio=0.5)",
    "runtime": "a Runtime config such as Int8Static(calibration=Entropy())",
    "recipe": "a Recipe",
}


def _table(kind: str) -> tuple[Choice, ...]:
    if kind not in _TABLES:
        raise ConfigError(f"kind={kind!r}; use one of {', '.join(map(repr, _TABLES))}.")
    return _TABLES[kind]


def names(kind: Kind) -> list[str]:
    """The strings offered for ``kind``, in the table's order (aliases not included)."""
    return [c.name for c in _table(kind)]


def options(kind: Kind) -> list[tuple[str, str]]:
    """``(label, name)`` pairs of ``kind``: an ipywidgets ``Dropdown``'s ``options``."""
    return [(c.label, c.name) for c in _table(kind)]


def unknown_choice(kind: Kind, value: Any, *, allowed: list[str] | None = None, otherwise: str | None = None) -> ConfigError:
    """The one error for a string the table does not hold: what was passed, what is allowed.

    ``allowed`` narrows the names offered (default: all of ``kind``'s); ``otherwise`` says what
    else is accepted in that place (default: a config of the kind; ``""``: nothing else).
    """
    allowed = names(kind) if allowed is None else allowed
    otherwise = _OTHERWISE[kind] if otherwise is None else otherwise
    alternative = f", or {otherwise}" if otherwise else ""
    return ConfigError(f"{kind}={value!r}; use one of {', '.join(map(repr, allowed))}{alternative}.")


def canonical_name(kind: Kind, value: Any, *, allowed: list[str] | None = None, otherwise: str | None = None) -> str:
    """The table's name for ``value`` (an alias resolved); ``unknown_choice`` when it is not one of ``allowed``."""
    allowed = names(kind) if allowed is None else allowed
    name = ALIASES.get(value, value) if isinstance(value, str) else None
    if name not in allowed:
        raise unknown_choice(kind, value, allowed=allowed, otherwise=otherwise)
    return name


def resolve(kind: Kind, value: Any, *, otherwise: str | None = None) -> Any:
    """The config ``value`` stands for: its table entry's (by name or alias), or ``value`` itself if a config of ``kind``."""
    if isinstance(value, _CONFIG_TYPES[kind] if kind in _CONFIG_TYPES else ()):
        return value
    name = canonical_name(kind, value, otherwise=otherwise)
    return next(c.config for c in _table(kind) if c.name == name)
