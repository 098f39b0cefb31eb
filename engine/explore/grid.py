"""A sweep's grid: the recipe at each (bits, sparsity) point, and the defaults that apply to the model given.

``Grid`` is what a caller passes (``sweep(model, data, grid=Grid(bits=[8, 4]))``, or its fields as keywords;
the ``Explorer`` starts at a grid's one point): one frozen value, its values checked when it is made.
``grid_recipe(bits, sparsity, ...)`` builds one point's recipe (the explorer builds its slider
positions the same way, so a slider landing on a swept point is a cache hit).

What a sweep measures when the caller leaves the grid to it is only what applies to the model given.

A default that cannot run on the model would turn a first sweep into an error (a CNN's ONNX file
and ``int8-dynamic``, which leaves convolutions float and is refused) or into a list of failed
points (simulated bit widths of an ONNX file, which has no PyTorch layers). So the defaults are
chosen per model, and what was left out is said, with why and what to pass instead:

* a PyTorch model: bit widths 8, 6, 4, 3, 2 (8 for an int8 runtime, 8 and 4 for weight-only) at
  sparsities 0, 0.5, 0.75, 0.9, simulated unless ``runtime=`` says otherwise;
* an ONNX file: no grid; ONNX Runtime's recipes that apply (``DEFAULT_ONNX_RECIPES``): dynamic int8
  when the weights are mostly in MatMul/Gemm/Gather, static int8 when calibration inputs are
  given, float16 always.

What the caller names explicitly is never left out: a recipe that does not apply is refused before
any work (``ConfigError``), by the same test (``not_applicable``), whose reason the command line
words in its own options.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from squeezelab.engine.core import choices
from squeezelab.engine.core.arguments import fraction, grid_lists, scalar, width
from squeezelab.engine.core.errors import ConfigError
from squeezelab.engine.core.pruners import ChannelPruning, LayerPruning, MagnitudePruning, NMPruning, PruningConfig
from squeezelab.engine.core.quantizers import FixedPoint, Float16, LinearQuantization, QuantizationConfig
from squeezelab.engine.core.recipe import Recipe
from squeezelab.engine.core.runtimes import DYNAMIC_OP_TYPES, Int8Dynamic, Int8Static, Onnx, Runtime, WeightOnly
from squeezelab.engine.explore.evaluation import asked_sparsity
from squeezelab.engine.core.layers import chosen_layers
from squeezelab.engine.pipeline.coverage import onnx_weight_elements
from squeezelab.engine.pruning.attention import attention_modules

__all__ = [
    "Grid", "grid_recipe", "weight_quantizer", "check_layer_names", "build_grid", "GridPoint",
    "DEFAULT_BITS", "DEFAULT_SPARSITY", "DEFAULT_ONNX_RECIPES", "NotApplicable", "default_bits",
    "not_applicable", "check_applicable", "onnx_default_recipes",
]

DEFAULT_BITS = (8, 6, 4, 3, 2)
DEFAULT_SPARSITY = (0.0, 0.5, 0.75, 0.9)
# ONNX Runtime's recipes tried on an ONNX file, by their names in ``choices.RECIPES``.
DEFAULT_ONNX_RECIPES = ("int8-dynamic", "int8-static", "float16")
# A runtime name a Grid takes: the runtimes', and the whole recipes the explorer of an ONNX file starts at
# (float16); fp32 is the baseline, measured anyway.
_RUNTIME_NAMES = tuple(dict.fromkeys(choices.names("runtime") + [n for n in choices.names("recipe") if n != "fp32"]))
_RUNTIME_OTHERWISE = "'float16' (the explorer of an ONNX file), a Runtime config, or None for the default"
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


@dataclass(frozen=True, kw_only=True)
class Grid:
    """Which recipes a ``sweep`` measures (every ``bits`` × ``sparsity`` pair, then ``recipes``), or where the
    ``Explorer``'s controls start (one value each): one value to keep, share and change with
    ``dataclasses.replace`` (which checks the new values again).

    ``sweep(model, data, grid=Grid(bits=[8, 4]))`` is ``sweep(model, data, bits=[8, 4])``; keywords given with a
    grid change its fields. Values are checked when the grid is made (``ConfigError`` naming the field and
    what is allowed); whether a point can run on the model is checked by the verb, before any work.

    Args:
        bits: weight widths (2..8, 16; 32 = float weights); one width means a list of one. None: the widths
            the runtime stores (8, 6, 4, 3, 2 simulated; 8 for int8; 8 and 4 weight-only); the explorer: 8.
        sparsity: fractions pruned, in [0, 1); one value means a list of one. None: 0, 0.5, 0.75, 0.9
            (0 for an ONNX file); the explorer: 0.
        quantization: ``"linear-symmetric"``, ``"linear-affine"``, ``"linear-pertensor"``, ``"kmeans"``,
            ``"fixed-point"``, ``"float16"``, or a config used as a template.
        pruning: ``"magnitude"``, ``"structured"``, ``"structured-heads"``, ``"layers"`` or ``"n:m"``, or a config.
        runtime: ``"simulated"`` (None: the default; for an ONNX file, ONNX Runtime's recipes that apply),
            ``"simulated-huffman"``, ``"int8-dynamic"``, ``"int8-static"``, ``"weight-only"``, or a Runtime config;
            the explorer of an ONNX file also starts at ``"float16"``. An unknown name is refused when the grid is made.
        recipes: more recipes (or one) to measure alongside the grid (a sweep only).

    Examples:
        >>> Grid(bits=4, sparsity=[0.0, 0.5]).bits
        (4,)
        >>> Grid(bits=[8, 4], sparsity=[])
        Traceback (most recent call last):
        ...
        squeezelab.engine.core.errors.ConfigError: sparsity=[] is empty: sweep measures every bits × sparsity pair, ...
    """

    bits: int | Sequence[int] | None = None
    sparsity: float | Sequence[float] | None = None
    quantization: str | QuantizationConfig = "linear-symmetric"
    pruning: str | PruningConfig = "magnitude"
    runtime: str | Runtime | None = None
    recipes: Recipe | Sequence[Recipe] = ()

    def __post_init__(self) -> None:
        recipes = (self.recipes,) if isinstance(self.recipes, Recipe) else _recipe_list(self.recipes)
        object.__setattr__(self, "recipes", recipes)
        choices.resolve("quantization", self.quantization)  # an unknown name fails now, naming the choices
        choices.resolve("pruning", self.pruning)
        if self.runtime is not None and not isinstance(self.runtime, (str, Runtime)):
            raise ConfigError(f"Grid: runtime={self.runtime!r}; pass a runtime name such as 'int8-dynamic', a Runtime "
                              "config, or None for the default.")
        if isinstance(self.runtime, str) and choices.ALIASES.get(self.runtime, self.runtime) not in _RUNTIME_NAMES:
            raise choices.unknown_choice("runtime", self.runtime, otherwise=_RUNTIME_OTHERWISE)  # a typo fails now
        if self.bits is None and self.sparsity is None:
            return  # the defaults that apply to the model are chosen by the verb
        # A missing list stands in with one value here: the rule on empty lists is sweep's (grid_lists).
        bits, sparsity = grid_lists(8 if self.bits is None else self.bits, 0.0 if self.sparsity is None else self.sparsity,
                                    layout="product", recipes=bool(recipes))
        if self.bits is not None:
            object.__setattr__(self, "bits", bits)
        if self.sparsity is not None:
            object.__setattr__(self, "sparsity", sparsity)


def weight_quantizer(quantization: str | QuantizationConfig, *, width_based: bool = False) -> QuantizationConfig:
    """The quantizer a name (see ``squeezelab.engine.core.choices.QUANTIZATIONS``) or config stands for.

    ``width_based=True`` refuses float16, whose width cannot be chosen (sensitivity, search).
    """
    template = choices.resolve("quantization", quantization)
    if width_based and isinstance(template, Float16):
        raise ConfigError(
            f"quantization={quantization!r} has no width to choose; use a width-based quantizer "
            f"({', '.join(k for k in choices.names('quantization') if k != 'float16')})."
        )
    return template


def _quantizer(quantization: str | QuantizationConfig, bits: int) -> QuantizationConfig | None:
    template = weight_quantizer(quantization)
    if bits == 32:
        return None
    if isinstance(template, Float16):
        if bits != 16:
            raise ConfigError(f"float16 stores 16 bits; bits={bits} does not apply (use bits=[16] or 32).")
        return template
    if bits == 16 and not isinstance(template, (LinearQuantization, FixedPoint)):
        raise ConfigError(f"{type(template).__name__} goes up to 8 bits; bits=16 does not apply.")
    return template.with_bits(bits)


def _pruner(pruning: str | PruningConfig, sparsity: float) -> PruningConfig | None:
    if sparsity == 0:
        return None
    template = choices.resolve("pruning", pruning)
    return _pruning_at(template, sparsity)


def _pruning_at(template: PruningConfig, sparsity: float) -> PruningConfig:
    """``template`` pruning ``sparsity`` of what it prunes (weights, channels, blocks, N of every M)."""
    if isinstance(template, (MagnitudePruning, ChannelPruning)):
        return template.with_amount(sparsity)
    if isinstance(template, LayerPruning):  # the grid's amount is the fraction of removable blocks dropped
        return dataclasses.replace(template, keep=None, ratio=sparsity)
    if isinstance(template, NMPruning):  # no continuous amount: the grid's sparsity picks N of M
        m = template.m
        n = round((1 - sparsity) * m)
        if not 1 <= n <= m or abs((m - n) / m - sparsity) > 1e-9:
            allowed = [f"{(m - k) / m:g}" for k in range(1, m)]
            raise ConfigError(f"N:M pruning with m={m} gives sparsity {', '.join(allowed)}; got {sparsity}.")
        return NMPruning(n=n, m=m)
    raise choices.unknown_choice("pruning", template)


def grid_recipe(
    bits: int,
    sparsity: float = 0.0,
    *,
    quantization: str | QuantizationConfig = "linear-symmetric",
    pruning: str | PruningConfig = "magnitude",
    runtime: str | Runtime = "simulated",
) -> Recipe:
    """The recipe at one grid point: weights at ``bits`` (32 = float), ``sparsity`` pruned.

    With an int8 runtime the quantizer is ONNX Runtime's, so ``bits`` must be 8
    (or 32: the float model, pruned, as an ONNX model); with ``WeightOnly`` 4 or 8
    (a ``WeightOnly`` config given as the runtime is a template: its bits are replaced). Float weights with the
    simulated runtime are measured as an ONNX model too, so every float point
    is executable.

    Examples:
        >>> grid_recipe(4, 0.5).label
        'magnitude50%-layer + linear4-sym-perchannel (simulated)'
        >>> grid_recipe(8, 0.0, runtime="int8-dynamic").label
        'int8-dynamic'
        >>> grid_recipe(4, 0.0, runtime="weight-only").runtime.bits
        4
    """
    # values read back from a table arrive as numpy scalars; recipes hold plain numbers (JSON, TOML)
    bits, sparsity = width(scalar(bits)), fraction(scalar(sparsity))
    rt = choices.resolve("runtime", runtime)
    prune = _pruner(pruning, sparsity)
    if isinstance(rt, (Int8Dynamic, Int8Static)):
        if bits not in (8, 32):
            raise ConfigError(
                f"bits={bits} with runtime {type(rt).__name__}: ONNX Runtime's int8 path stores 8 bits. "
                "Use bits 8 (or 32 for the float model), or runtime='simulated' for other widths."
            )
        return Recipe(pruning=prune, runtime=rt if bits == 8 else Onnx())
    if isinstance(rt, WeightOnly):
        if bits not in (4, 8, 32):
            raise ConfigError(
                f"bits={bits} with runtime WeightOnly: ONNX Runtime's MatMulNBits stores 4 or 8 bits. "
                "Use bits 4 or 8 (or 32 for the float model), or runtime='simulated' for other widths."
            )
        return Recipe(pruning=prune, runtime=dataclasses.replace(rt, bits=bits) if bits != 32 else Onnx())
    quant = _quantizer(quantization, bits)
    if quant is None or isinstance(quant, Float16):  # float32 and float16 run for real in ORT
        return Recipe(pruning=prune, quantization=quant, runtime=Onnx())
    return Recipe(pruning=prune, quantization=quant, runtime=rt)


def check_layer_names(model: nn.Module | bytes, recipe: Recipe) -> None:
    """Raise ``ConfigError`` when ``recipe.layers`` names a layer without weights in ``model``."""
    if not recipe.layers:
        return
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{recipe.label}: per-layer settings need the PyTorch model; an ONNX file has no layers to set.")

    known = [name for name, _ in chosen_layers(model)]
    if isinstance(recipe.pruning, ChannelPruning):  # an attention module's setting is its fraction of heads

        known += list(attention_modules(model))
    unknown = sorted({item.name for item in recipe.layers} - set(known))
    if unknown:
        raise ConfigError(
            f"{recipe.label}: per-layer settings name {unknown}, which are not Linear/Conv layers of "
            f"{type(model).__name__}; its layers are {known}."
        )


@dataclass(frozen=True)
class NotApplicable:
    """Why a recipe does not apply to a model: ``why`` (the reason), ``fix`` (in API words) and
    ``cli_fix`` (in the command line's words)."""

    label: str
    why: str
    fix: str
    cli_fix: str

    @property
    def message(self) -> str:
        """The reason and its fix in API words: ``int8-dynamic does not apply: ...; use ...``."""
        return f"{self.label} does not apply: {self.why}; {self.fix}"


def default_bits(runtime: Any) -> tuple[int, ...]:
    """The widths a grid takes by default under ``runtime`` (a name or a Runtime): the ones it stores."""
    rt = choices.resolve("runtime", runtime)
    if isinstance(rt, (Int8Dynamic, Int8Static)):
        return (8,)  # ONNX Runtime's int8 stores 8 bits
    if isinstance(rt, WeightOnly):
        return (8, 4)  # MatMulNBits stores 4 or 8
    return DEFAULT_BITS


def _dynamic_coverage(model: nn.Module | bytes) -> tuple[float, str] | None:
    """``(fraction of weight elements dynamic int8 quantizes, weight elements by op)`` when it is below one
    half (where ``check_int8_coverage`` refuses it); None when it may reach more.

    An ONNX graph is read exactly. A PyTorch model is judged by its layers without exporting: only when
    convolutions hold most weight elements is the answer sure (dynamic int8 leaves them float).
    """
    if isinstance(model, bytes):
        by_op, total = onnx_weight_elements(model)
        covered = sum(n for op, n in by_op.items() if op in DYNAMIC_OP_TYPES)
        shares = ", ".join(f"{op} {n / total:.0%}" for op, n in by_op.most_common())
        return (covered / total, shares) if total and covered / total < 0.5 else None
    conv = total = 0
    for module in model.modules():
        own = sum(p.numel() for p in module.parameters(recurse=False) if p.dim() >= 2)
        total += own
        conv += own if isinstance(module, _CONV) else 0
    if not total or conv / total <= 0.5:
        return None
    return 1 - conv / total, f"convolutions {conv / total:.0%}, counted on the PyTorch layers"


def not_applicable(model: nn.Module | bytes, recipe: Recipe, *, calibrated: bool) -> NotApplicable | None:
    """Why ``recipe`` cannot run on ``model`` (a PyTorch model or ONNX bytes), or None; nothing is exported.

    ``calibrated``: calibration inputs were given (static int8 needs them).
    """
    label, rt = recipe.label, recipe.runtime
    if isinstance(model, bytes) and (recipe.pruning is not None or not rt.onnx):
        return NotApplicable(
            label, "an ONNX file has no PyTorch layers to prune or to quantize in simulation",
            "pass the PyTorch model, or ONNX Runtime's recipes (Recipe(runtime=Int8Dynamic()), "
            "Recipe(runtime=Int8Static()), Recipe(quantization=Float16()))",
            "pass the PyTorch factory as MODEL, or --recipe int8-dynamic / int8-static / float16",
        )
    if isinstance(rt, Int8Static) and not calibrated:
        return NotApplicable(
            label, "static int8 calibrates activation ranges on inputs kept apart from the evaluation data, "
            "and none were given", "pass calibration_data=", "pass --calibration CAL.npz",
        )
    if isinstance(rt, Int8Dynamic) and rt.op_types is None:
        low = _dynamic_coverage(model)
        if low is not None:
            fraction, shares = low
            return NotApplicable(
                label, f"dynamic int8 quantizes MatMul, Gemm and Gather weights, at most {fraction:.0%} of this model's "
                f"(weight elements: {shares}), and leaves the convolutions float",
                "use Int8Static() with calibration_data= (static int8 quantizes convolutions)",
                "use int8-static with --calibration CAL.npz (static int8 quantizes convolutions)",
            )
    return None


def check_applicable(model: nn.Module | bytes, recipes: Sequence[Recipe], *, calibrated: bool) -> None:
    """Raise ``ConfigError`` (in API words) for the first recipe the caller asked for that cannot run.

    Static int8 without calibration inputs is left to ``check_calibration`` (a ``CalibrationError``).
    """
    for recipe in recipes:
        if isinstance(recipe.runtime, Int8Static) and not calibrated:
            continue
        reason = not_applicable(model, recipe, calibrated=calibrated)
        if reason is not None:
            raise ConfigError(reason.message + ".")


def onnx_default_recipes(onnx_bytes: bytes, *, calibrated: bool) -> tuple[list[Recipe], list[NotApplicable]]:
    """ONNX Runtime's recipes an ONNX file takes by default (``DEFAULT_ONNX_RECIPES`` that apply), and the rest."""
    kept, left = [], []
    for name in DEFAULT_ONNX_RECIPES:
        recipe = choices.resolve("recipe", name)
        reason = not_applicable(onnx_bytes, recipe, calibrated=calibrated)
        (kept if reason is None else left).append(recipe if reason is None else reason)
    return kept, left


# One grid point: its recipe and the coordinates the table shows for it (bits, sparsity).
GridPoint = tuple[Recipe, dict[str, Any]]


def _recipe_list(recipes: Any) -> tuple[Recipe, ...]:
    try:
        items = tuple(recipes)
    except TypeError:
        raise ConfigError(f"recipes={recipes!r}; pass a Recipe or a list of Recipe objects.") from None
    for recipe in items:
        if not isinstance(recipe, Recipe):
            raise ConfigError(f"recipes must hold Recipe objects, got {type(recipe).__name__}.")
    return items


def _defaults(target: nn.Module | bytes | None, bits: Any, sparsity: Any, runtime: Any, recipes: tuple[Recipe, ...],
              calibrated: bool) -> tuple[Any, Any, Any, tuple[Recipe, ...], list[NotApplicable]]:
    """``bits``, ``sparsity``, ``runtime`` and ``recipes`` with the defaults that apply to ``target`` filled in,
    and what the defaults left out (see the module docstring)."""
    left: list[NotApplicable] = []
    onnx = isinstance(target, bytes)
    if onnx and bits is None and sparsity is None and runtime is None:
        left.append(NotApplicable(
            "the bits x sparsity grid", "an ONNX file has no PyTorch layers to prune or to quantize in simulation",
            "pass the PyTorch model for it", "pass the PyTorch factory as MODEL for it",
        ))
        if not recipes:
            found, more = onnx_default_recipes(target, calibrated=calibrated)
            recipes, left = tuple(found), left + more
        return (), (), "simulated", recipes, left
    runtime = "simulated" if runtime is None else runtime
    bits = default_bits(runtime) if bits is None else bits
    sparsity = ((0.0,) if onnx else DEFAULT_SPARSITY) if sparsity is None else sparsity
    return bits, sparsity, runtime, recipes, left


def build_grid(target: nn.Module | bytes | None, grid: Grid, *, calibrated: bool) -> tuple[list[GridPoint], list[NotApplicable]]:
    """The checked grid: the fp32 baseline first, then every (bits, sparsity) recipe, then ``grid.recipes``;
    each recipe once (grid points that name the same recipe are measured once); and what the defaults left out.

    Defaults (None) are the ones that apply to ``target`` (the PyTorch model or the ONNX bytes); a point the
    caller asked for that cannot run on it is refused here, before any work."""
    bits, sparsity, runtime, recipes, left = _defaults(target, grid.bits, grid.sparsity, grid.runtime, grid.recipes,
                                                       calibrated)
    bits, sparsity = grid_lists(bits, sparsity, layout="product", recipes=bool(recipes))
    points: list[GridPoint] = [(Recipe(), {"bits": 32, "sparsity": 0.0})]
    seen = {Recipe()}
    for b in bits:
        for s in sparsity:
            recipe = grid_recipe(b, s, quantization=grid.quantization, pruning=grid.pruning, runtime=runtime)
            if recipe not in seen:
                seen.add(recipe)
                points.append((recipe, {"bits": b, "sparsity": float(s)}))
    for recipe in recipes:
        if recipe not in seen:
            seen.add(recipe)
            points.append((recipe, {"bits": recipe.bits, "sparsity": asked_sparsity(recipe)}))
    if target is not None:
        check_applicable(target, [recipe for recipe, _ in points[1:]], calibrated=calibrated)
    return points, left
