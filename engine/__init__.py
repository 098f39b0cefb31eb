"""squeezelab.engine: everything that transforms or measures a model.

No ipywidgets, plotly or pytest imports here. The public names load lazily
(PEP 562): importing ``squeezelab.engine.core.errors`` or the pytest plugin does
not import torch; the first use of ``compress`` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from squeezelab._lazy import lazy_attributes

_LAZY = {
    "sweep": "squeezelab.engine.explore.sweep",
    "Sweep": "squeezelab.engine.explore.sweep",
    "SweepInterrupted": "squeezelab.engine.explore.sweep",
    "grid_recipe": "squeezelab.engine.explore.sweep",
    "layer_sensitivity": "squeezelab.engine.explore.sensitivity",
    "search": "squeezelab.engine.explore.search",
    "SearchResult": "squeezelab.engine.explore.search",
    "LayerSetting": "squeezelab.engine.core.recipe",
    "ResultCache": "squeezelab.engine.explore.cache",
    "Evaluator": "squeezelab.engine.explore.evaluation",
    "pareto_front": "squeezelab.engine.explore.pareto",
    "prune": "squeezelab.engine.pruning.prune",
    "prune_": "squeezelab.engine.pruning.prune",
    "bake_masks_": "squeezelab.engine.pruning.prune",
    "MagnitudePruning": "squeezelab.engine.core.pruners",
    "ChannelPruning": "squeezelab.engine.core.pruners",
    "LayerPruning": "squeezelab.engine.core.pruners",
    "prune_channels": "squeezelab.engine.pruning.structured",
    "finetune": "squeezelab.engine.train.finetune",
    "prune_at_init": "squeezelab.engine.pruning.at_init",
    "find_lottery_ticket": "squeezelab.engine.train.lottery",
    "factorize": "squeezelab.engine.pruning.lowrank",
    "share_weights": "squeezelab.engine.quantization.shared_weights",
    "prepare_qat": "squeezelab.engine.quantization.qat",
    "calibrate_": "squeezelab.engine.quantization.qat",
    "export_qat": "squeezelab.engine.quantization.qat",
    "bake_shared_weights_": "squeezelab.engine.quantization.shared_weights",
    "GradualPruning": "squeezelab.engine.train.finetune",
    "Distillation": "squeezelab.engine.train.finetune",
    "NMPruning": "squeezelab.engine.core.pruners",
    "load_packed": "squeezelab.engine.pipeline.artifact",
    "Compressed": "squeezelab.engine.pipeline.compressed",
    "compress": "squeezelab.engine.pipeline.compress",
    "DigitsCNN": "squeezelab.engine.zoo.digits",
    "DigitsMLP": "squeezelab.engine.zoo.digits",
    "LeNet5": "squeezelab.engine.zoo.digits",
    "default_model": "squeezelab.engine.zoo.digits",
    "ArtifactError": "squeezelab.engine.core.errors",
    "CacheError": "squeezelab.engine.core.errors",
    "CalibrationError": "squeezelab.engine.core.errors",
    "ConfigError": "squeezelab.engine.core.errors",
    "DataError": "squeezelab.engine.core.errors",
    "ExampleInputError": "squeezelab.engine.core.errors",
    "ExportError": "squeezelab.engine.core.errors",
    "InvalidWeightsError": "squeezelab.engine.core.errors",
    "ModelError": "squeezelab.engine.core.errors",
    "ProviderError": "squeezelab.engine.core.errors",
    "ProviderFallbackError": "squeezelab.engine.core.errors",
    "ProviderUnavailableError": "squeezelab.engine.core.errors",
    "SqueezeError": "squeezelab.engine.core.errors",
    "UnexportableLayerError": "squeezelab.engine.core.errors",
    "StructuredPruningError": "squeezelab.engine.core.errors",
    "Metrics": "squeezelab.engine.measurement.metrics",
    "measure": "squeezelab.engine.measurement.metrics",
    "top1_accuracy": "squeezelab.engine.measurement.scoring",
    "quantize": "squeezelab.engine.quantization.simulated",
    "quantize_": "squeezelab.engine.quantization.simulated",
    "Entropy": "squeezelab.engine.core.runtimes",
    "FixedPoint": "squeezelab.engine.core.quantizers",
    "Float16": "squeezelab.engine.core.quantizers",
    "Int8Dynamic": "squeezelab.engine.core.runtimes",
    "Int8Static": "squeezelab.engine.core.runtimes",
    "WeightOnly": "squeezelab.engine.core.runtimes",
    "KMeansQuantization": "squeezelab.engine.core.quantizers",
    "LinearQuantization": "squeezelab.engine.core.quantizers",
    "MinMax": "squeezelab.engine.core.runtimes",
    "Onnx": "squeezelab.engine.core.runtimes",
    "PerChannel": "squeezelab.engine.core.quantizers",
    "Percentile": "squeezelab.engine.core.runtimes",
    "PerTensor": "squeezelab.engine.core.quantizers",
    "Recipe": "squeezelab.engine.core.recipe",
    "Simulated": "squeezelab.engine.core.runtimes",
    "Settings": "squeezelab.engine.measurement.point",
    "Point": "squeezelab.engine.measurement.point",
    "measure_pair": "squeezelab.engine.measurement.paired",
    "PairedMetrics": "squeezelab.engine.measurement.paired",
    "Metric": "squeezelab.engine.measurement.scoring",
    "cosine_similarity": "squeezelab.engine.measurement.scoring",
    "negative_mse": "squeezelab.engine.measurement.scoring",
    "top1_agreement": "squeezelab.engine.measurement.scoring",
    "cosine_to_baseline": "squeezelab.engine.measurement.scoring",
    "kl_to_baseline": "squeezelab.engine.measurement.scoring",
    "Inputs": "squeezelab.engine.core.inputs",
}


__getattr__, __dir__ = lazy_attributes("squeezelab.engine", globals(), _LAZY)


if TYPE_CHECKING:  # static analysers see the real imports
    from squeezelab.engine.explore.sweep import Sweep, SweepInterrupted, grid_recipe, sweep
    from squeezelab.engine.explore.sensitivity import layer_sensitivity
    from squeezelab.engine.explore.search import SearchResult, search
    from squeezelab.engine.core.recipe import LayerSetting
    from squeezelab.engine.explore.cache import ResultCache
    from squeezelab.engine.explore.evaluation import Evaluator
    from squeezelab.engine.explore.pareto import pareto_front
    from squeezelab.engine.pruning.prune import bake_masks_, prune, prune_
    from squeezelab.engine.core.pruners import ChannelPruning, LayerPruning, MagnitudePruning, NMPruning
    from squeezelab.engine.pruning.at_init import prune_at_init
    from squeezelab.engine.train.lottery import find_lottery_ticket
    from squeezelab.engine.pruning.lowrank import factorize
    from squeezelab.engine.quantization.qat import calibrate_, export_qat, prepare_qat
    from squeezelab.engine.quantization.shared_weights import bake_shared_weights_, share_weights
    from squeezelab.engine.train.finetune import Distillation, GradualPruning, finetune
    from squeezelab.engine.pruning.structured import prune_channels
    from squeezelab.engine.pipeline.artifact import load_packed
    from squeezelab.engine.pipeline.compressed import Compressed
    from squeezelab.engine.pipeline.compress import compress
    from squeezelab.engine.zoo.digits import DigitsCNN, DigitsMLP, LeNet5, default_model
    from squeezelab.engine.core.errors import (
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
    from squeezelab.engine.measurement.metrics import Metrics, measure
    from squeezelab.engine.measurement.paired import PairedMetrics, measure_pair
    from squeezelab.engine.measurement.point import Point, Settings
    from squeezelab.engine.core.inputs import Inputs
    from squeezelab.engine.measurement.scoring import (
        Metric,
        cosine_similarity,
        cosine_to_baseline,
        kl_to_baseline,
        negative_mse,
        top1_accuracy,
        top1_agreement,
    )
    from squeezelab.engine.quantization.simulated import quantize, quantize_
    from squeezelab.engine.core.quantizers import (
        FixedPoint,
        Float16,
        KMeansQuantization,
        LinearQuantization,
        PerChannel,
        PerTensor,
    )
    from squeezelab.engine.core.recipe import Recipe
    from squeezelab.engine.core.runtimes import (
        Entropy,
        Int8Dynamic,
        Int8Static,
        MinMax,
        Onnx,
        Percentile,
        Simulated,
        WeightOnly,
    )

# The public names, listed once: the lazy map is the list.
__all__ = list(_LAZY)
