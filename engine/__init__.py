"""squeezelab.engine: everything that transforms or measures a model.

No ipywidgets, plotly or pytest imports here. The public names load lazily
(PEP 562): importing ``squeezelab.engine.errors`` or the pytest plugin does
not import torch; the first use of ``compress`` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from squeezelab._lazy import lazy_attributes

_LAZY = {
    "sweep": "squeezelab.engine.sweeping",
    "Sweep": "squeezelab.engine.sweeping",
    "SweepInterrupted": "squeezelab.engine.sweeping",
    "grid_recipe": "squeezelab.engine.sweeping",
    "layer_sensitivity": "squeezelab.engine.sensitivity",
    "search": "squeezelab.engine.budget_search",
    "SearchResult": "squeezelab.engine.budget_search",
    "LayerSetting": "squeezelab.engine.recipe",
    "ResultCache": "squeezelab.engine.cache",
    "Evaluator": "squeezelab.engine.evaluation",
    "pareto_front": "squeezelab.engine.pareto",
    "prune": "squeezelab.engine.pruning",
    "prune_": "squeezelab.engine.pruning",
    "bake_masks_": "squeezelab.engine.pruning",
    "MagnitudePruning": "squeezelab.engine.recipe",
    "ChannelPruning": "squeezelab.engine.recipe",
    "LayerPruning": "squeezelab.engine.recipe",
    "prune_channels": "squeezelab.engine.structured",
    "finetune": "squeezelab.engine.training",
    "prune_at_init": "squeezelab.engine.at_init",
    "find_lottery_ticket": "squeezelab.engine.lottery",
    "factorize": "squeezelab.engine.lowrank",
    "share_weights": "squeezelab.engine.shared_weights",
    "prepare_qat": "squeezelab.engine.qat",
    "calibrate_": "squeezelab.engine.qat",
    "export_qat": "squeezelab.engine.qat",
    "bake_shared_weights_": "squeezelab.engine.shared_weights",
    "GradualPruning": "squeezelab.engine.training",
    "Distillation": "squeezelab.engine.training",
    "NMPruning": "squeezelab.engine.recipe",
    "load_packed": "squeezelab.engine.artifact",
    "Compressed": "squeezelab.engine.compressed",
    "compress": "squeezelab.engine.compression",
    "DigitsCNN": "squeezelab.engine.default_models",
    "DigitsMLP": "squeezelab.engine.default_models",
    "LeNet5": "squeezelab.engine.default_models",
    "default_model": "squeezelab.engine.default_models",
    "ArtifactError": "squeezelab.engine.errors",
    "CacheError": "squeezelab.engine.errors",
    "CalibrationError": "squeezelab.engine.errors",
    "ConfigError": "squeezelab.engine.errors",
    "DataError": "squeezelab.engine.errors",
    "ExampleInputError": "squeezelab.engine.errors",
    "ExportError": "squeezelab.engine.errors",
    "InvalidWeightsError": "squeezelab.engine.errors",
    "ModelError": "squeezelab.engine.errors",
    "ProviderError": "squeezelab.engine.errors",
    "ProviderFallbackError": "squeezelab.engine.errors",
    "ProviderUnavailableError": "squeezelab.engine.errors",
    "SqueezeError": "squeezelab.engine.errors",
    "UnexportableLayerError": "squeezelab.engine.errors",
    "StructuredPruningError": "squeezelab.engine.errors",
    "Metrics": "squeezelab.engine.metrics",
    "measure": "squeezelab.engine.metrics",
    "top1_accuracy": "squeezelab.engine.scoring",
    "quantize": "squeezelab.engine.quantize_model",
    "quantize_": "squeezelab.engine.quantize_model",
    "Entropy": "squeezelab.engine.recipe",
    "FixedPoint": "squeezelab.engine.recipe",
    "Float16": "squeezelab.engine.recipe",
    "Int8Dynamic": "squeezelab.engine.recipe",
    "Int8Static": "squeezelab.engine.recipe",
    "WeightOnly": "squeezelab.engine.recipe",
    "KMeansQuantization": "squeezelab.engine.recipe",
    "LinearQuantization": "squeezelab.engine.recipe",
    "MinMax": "squeezelab.engine.recipe",
    "Onnx": "squeezelab.engine.recipe",
    "PerChannel": "squeezelab.engine.recipe",
    "Percentile": "squeezelab.engine.recipe",
    "PerTensor": "squeezelab.engine.recipe",
    "Recipe": "squeezelab.engine.recipe",
    "Simulated": "squeezelab.engine.recipe",
    "Settings": "squeezelab.engine.point",
    "Point": "squeezelab.engine.point",
    "measure_pair": "squeezelab.engine.paired",
    "PairedMetrics": "squeezelab.engine.paired",
    "Metric": "squeezelab.engine.scoring",
    "cosine_similarity": "squeezelab.engine.scoring",
    "negative_mse": "squeezelab.engine.scoring",
    "top1_agreement": "squeezelab.engine.scoring",
    "cosine_to_baseline": "squeezelab.engine.scoring",
    "kl_to_baseline": "squeezelab.engine.scoring",
    "Inputs": "squeezelab.engine.inputs",
}


__getattr__, __dir__ = lazy_attributes("squeezelab.engine", globals(), _LAZY)


if TYPE_CHECKING:  # static analysers see the real imports
    from squeezelab.engine.sweeping import Sweep, SweepInterrupted, grid_recipe, sweep
    from squeezelab.engine.sensitivity import layer_sensitivity
    from squeezelab.engine.budget_search import SearchResult, search
    from squeezelab.engine.recipe import LayerSetting
    from squeezelab.engine.cache import ResultCache
    from squeezelab.engine.evaluation import Evaluator
    from squeezelab.engine.pareto import pareto_front
    from squeezelab.engine.pruning import bake_masks_, prune, prune_
    from squeezelab.engine.recipe import ChannelPruning, LayerPruning, MagnitudePruning, NMPruning
    from squeezelab.engine.at_init import prune_at_init
    from squeezelab.engine.lottery import find_lottery_ticket
    from squeezelab.engine.lowrank import factorize
    from squeezelab.engine.qat import calibrate_, export_qat, prepare_qat
    from squeezelab.engine.shared_weights import bake_shared_weights_, share_weights
    from squeezelab.engine.training import Distillation, GradualPruning, finetune
    from squeezelab.engine.structured import prune_channels
    from squeezelab.engine.artifact import load_packed
    from squeezelab.engine.compressed import Compressed
    from squeezelab.engine.compression import compress
    from squeezelab.engine.default_models import DigitsCNN, DigitsMLP, LeNet5, default_model
    from squeezelab.engine.errors import (
        ArtifactError,
        CacheError,
        CalibrationError,
        ConfigError,
        DataError,
        ExampleInputError,
        ExportError,
        InvalidWeightsError,
        ModelError,
        ProviderError,
        ProviderFallbackError,
        ProviderUnavailableError,
        SqueezeError,
        StructuredPruningError,
        UnexportableLayerError,
    )
    from squeezelab.engine.metrics import Metrics, measure
    from squeezelab.engine.paired import PairedMetrics, measure_pair
    from squeezelab.engine.point import Point, Settings
    from squeezelab.engine.inputs import Inputs
    from squeezelab.engine.scoring import (
        Metric,
        cosine_similarity,
        cosine_to_baseline,
        kl_to_baseline,
        negative_mse,
        top1_accuracy,
        top1_agreement,
    )
    from squeezelab.engine.quantize_model import quantize, quantize_
    from squeezelab.engine.recipe import (
        Entropy,
        FixedPoint,
        Float16,
        Int8Dynamic,
        Int8Static,
        KMeansQuantization,
        LinearQuantization,
        MinMax,
        Onnx,
        PerChannel,
        Percentile,
        PerTensor,
        Recipe,
        Simulated,
        WeightOnly,
    )

# The public names, listed once: the lazy map is the list.
__all__ = list(_LAZY)
