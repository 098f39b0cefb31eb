"""The public surface, listed once: each public module, and the names it shows with the module that holds them.

``squeezelab`` (the top level) holds the verbs and the configs they take, the results they return and
``SqueezeError``: about 40 names to hold in one's head. The rest lives in a few sub-modules, each with its own
page on the site (docs/reference/; tests/test_public_surface.py checks that the pages and this table agree).

Every public module loads its names lazily (PEP 562), so ``import squeezelab`` and
``from squeezelab.errors import ConfigError`` load no torch.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import Any

from squeezelab.engine.core import errors as core_errors  # a plain module: imports nothing

# Public module -> {module that holds the names (under squeezelab.engine unless it starts with "squeezelab."): names}.
PUBLIC: dict[str, dict[str, list[str]]] = {
    "squeezelab": {
        "pipeline.compress": ["compress"],
        "pipeline.compressed": ["Compressed"],
        "pipeline.artifact": ["load_packed"],
        "core.recipe": ["Recipe", "LayerSetting"],
        "core.runtimes": ["Onnx", "Int8Dynamic", "Int8Static", "WeightOnly", "Simulated"],
        "core.quantizers": ["LinearQuantization", "KMeansQuantization", "FixedPoint", "Float16", "PerTensor", "PerChannel"],
        "core.pruners": ["MagnitudePruning", "ChannelPruning", "LayerPruning", "NMPruning"],
        "core.transforms": ["Smoothing", "Equalization", "BiasCorrection"],
        "core.inputs": ["Inputs"],
        "core.errors": ["SqueezeError"],
        "quantization.simulated": ["quantize", "quantize_"],
        "pruning.prune": ["prune", "prune_"],
        "measurement.metrics": ["measure", "Metrics"],
        "measurement.paired": ["measure_pair", "PairedMetrics"],
        "measurement.point": ["Settings", "Point"],
        "train.finetune": ["finetune", "Training", "GradualPruning", "Distillation"],
        "explore.sweep": ["sweep", "Sweep"],
        "explore.pareto": ["pareto_front"],
        "explore.sensitivity": ["layer_sensitivity"],
        "explore.search": ["search"],
        "explore.search_result": ["SearchResult"],
    },
    "squeezelab.errors": {
        "core.errors": list(core_errors.__all__),  # every class of engine/core/errors.py, as it lists them
        "quantization.smoothing": ["SmoothingError"],
        "quantization.equalization": ["EqualizationError"],
        "explore.sweep": ["SweepError"],
        "zoo._deps": ["MissingModelPackageError"],
        "squeezelab.checks.budget": ["BudgetError"],
    },
    "squeezelab.metrics": {
        "measurement.scoring": [
            "Metric", "top1_accuracy", "cosine_similarity", "negative_mse", "top1_agreement", "cosine_to_baseline",
            "kl_to_baseline",
        ],
        "measurement.op_times": ["op_times", "time_split"],
    },
    "squeezelab.quantization": {
        "core.runtimes": ["MinMax", "Percentile", "Entropy"],
        "core.transforms": ["AdaRound"],
        "quantization.qat": ["prepare_qat", "calibrate_", "export_qat"],
        "quantization.shared_weights": ["share_weights", "bake_shared_weights_"],
    },
    "squeezelab.pruning": {
        "pruning.masks": ["bake_masks_"],
        "pruning.at_init": ["prune_at_init"],
        "pruning.lowrank": ["factorize"],
        "train.lottery": ["find_lottery_ticket"],
    },
    "squeezelab.explore": {
        "explore.search_setup": ["SearchConfig"],
        "explore.evaluation": ["Evaluator"],
        "explore.cache": ["ResultCache"],
        "explore.sweep": ["SweepInterrupted"],
        "explore.grid": ["Grid", "grid_recipe"],
    },
    "squeezelab.models": {
        "zoo.digits": ["DigitsCNN", "DigitsMLP", "LeNet5", "default_model"],
    },
}

# Top-level names of squeezelab 0.1 that moved to a sub-module: they still resolve at the top level for one
# release, with a DeprecationWarning naming the new place (history, not the surface: the places are above).
_LEFT_THE_TOP_LEVEL = (
    "ArtifactError", "CacheError", "CalibrationError", "ConfigError", "DataError", "ExampleInputError", "ExportError",
    "ExportMismatchError", "InvalidWeightsError", "ModelError", "ProviderError", "ProviderFallbackError",
    "ProviderUnavailableError", "QuantizationError", "StructuredPruningError", "UnexportableLayerError",
    "Metric", "top1_accuracy", "cosine_similarity", "negative_mse", "top1_agreement", "cosine_to_baseline",
    "kl_to_baseline", "op_times", "time_split",
    "MinMax", "Percentile", "Entropy", "prepare_qat", "calibrate_", "export_qat", "share_weights", "bake_shared_weights_",
    "bake_masks_", "prune_at_init", "factorize", "find_lottery_ticket",
    "Evaluator", "ResultCache", "SweepInterrupted", "grid_recipe",
    "DigitsCNN", "DigitsMLP", "LeNet5", "default_model",
)
# A shim removed outright: its replacement is a call, not a new place.
_REPLACED = {"prune_channels": ("pruning.prune", "squeezelab.prune(model, squeezelab.ChannelPruning(...))")}


def holder(where: str) -> str:
    """The full name of a module in ``PUBLIC``'s inner keys."""
    return where if where.startswith("squeezelab.") else f"squeezelab.engine.{where}"


def names_of(module: str) -> dict[str, str]:
    """Public name -> the module that holds it, for one public module."""
    return {name: holder(where) for where, names in PUBLIC[module].items() for name in names}


def moved_from_top_level() -> dict[str, tuple[str, str]]:
    """Old top-level name -> (the module that holds it, where to find it now)."""
    places = {name: (where, f"{module}.{name}") for module in PUBLIC if module != "squeezelab" for name, where in names_of(module).items()}
    moved = {name: places[name] for name in _LEFT_THE_TOP_LEVEL}
    return moved | {name: (holder(where), new) for name, (where, new) in _REPLACED.items()}


def facade(module: str, namespace: dict[str, Any], *, moved: dict[str, tuple[str, str]] | None = None) -> tuple[Callable, Callable, list[str]]:
    """``(__getattr__, __dir__, __all__)`` for a public module: its names load on first use; a moved name
    still resolves, with a ``DeprecationWarning`` that names its new place."""
    names = names_of(module)
    moved = moved or {}
    submodules = {m.rsplit(".", 1)[1] for m in PUBLIC if m.startswith(f"{module}.")}

    def __getattr__(name: str) -> Any:
        if name in names:
            value = getattr(importlib.import_module(names[name]), name)
            namespace[name] = value  # later lookups skip __getattr__
            return value
        if name in moved:
            where, new = moved[name]
            warnings.warn(
                f"{module}.{name} is deprecated: use {new} (the old name goes in the next release).", DeprecationWarning, stacklevel=2
            )
            return getattr(importlib.import_module(where), name)  # not cached: every use warns
        if name in submodules:  # `import squeezelab as sl; sl.errors.ConfigError` works without a second import
            return importlib.import_module(f"{module}.{name}")
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted([*namespace, *names])

    return __getattr__, __dir__, list(names)
