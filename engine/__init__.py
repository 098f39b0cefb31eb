"""squeezelab.engine: everything that transforms or measures a model.

No ipywidgets, plotly or pytest imports here. The public names load lazily
(PEP 562): importing ``squeezelab.engine.core.errors`` or the pytest plugin does
not import torch; the first use of ``compress`` does.

The sub-packages, each building only on those before it:

==============  ==========================================================================
core            errors, recipes and their configs, inputs, outputs, data forms, labels,
                the layer chooser, the example batch, fingerprints, CPU facts
runtime         ONNX export, ONNX files in, ONNX Runtime's quantizers (int8, float16,
                4-bit weight-only) with squeezelab's checks, sessions and providers
quantization    quantization in PyTorch: linear, fixed point, k-means, weight sharing,
                Huffman and bit packing, simulated models, quantization-aware training
pruning         the ``prune`` verb, masks, structured and whole-layer removal on
                Torch-Pruning's graph, pruning at init, low-rank factorisation
pipeline        ``compress``: recipe to ``Compressed`` (coverage, artifact, export)
measurement     metrics, interleaved latency, statistics, ``measure``, ``measure_pair``
train           fine-tuning, gradual pruning, distillation, lottery tickets
explore         the cached ``Evaluator``, ``sweep``, Pareto, sensitivity, ``search``
zoo             the built-in digits models and real models (no download)
==============  ==========================================================================

A public name's module is named inside its package (``explore/sweep.py`` holds ``sweep``), so
importing a module never rebinds a public name of this package (tests/test_lean_import.py).
"""

from __future__ import annotations

from squeezelab._lazy import lazy_attributes

# Each module (under squeezelab.engine) and the public names it holds: the one list of them.
_PUBLIC = {
    "core.errors": ["ArtifactError", "CacheError", "CalibrationError", "ConfigError", "DataError", "ExampleInputError", "ExportError", "ExportMismatchError", "InvalidWeightsError", "ModelError", "ProviderError", "ProviderFallbackError", "ProviderUnavailableError", "QuantizationError", "SqueezeError", "UnexportableLayerError", "StructuredPruningError"],
    "core.inputs": ["Inputs"],
    "core.pruners": ["MagnitudePruning", "ChannelPruning", "LayerPruning", "NMPruning"],
    "core.quantizers": ["FixedPoint", "Float16", "KMeansQuantization", "LinearQuantization", "PerChannel", "PerTensor"],
    "core.recipe": ["LayerSetting", "Recipe"],
    "core.transforms": ["Smoothing", "Equalization", "BiasCorrection"],
    "core.runtimes": ["Entropy", "Int8Dynamic", "Int8Static", "WeightOnly", "MinMax", "Onnx", "Percentile", "Simulated"],
    "quantization.qat": ["prepare_qat", "calibrate_", "export_qat"],
    "quantization.shared_weights": ["share_weights", "bake_shared_weights_"],
    "quantization.simulated": ["quantize", "quantize_"],
    "pruning.at_init": ["prune_at_init"],
    "pruning.lowrank": ["factorize"],
    "pruning.prune": ["prune", "prune_", "bake_masks_"],
    "pruning.structured": ["prune_channels"],
    "pipeline.artifact": ["load_packed"],
    "pipeline.compress": ["compress"],
    "pipeline.compressed": ["Compressed"],
    "measurement.metrics": ["Metrics", "measure"],
    "measurement.op_times": ["op_times", "time_split"],
    "measurement.paired": ["measure_pair", "PairedMetrics"],
    "measurement.point": ["Settings", "Point"],
    "measurement.scoring": ["top1_accuracy", "Metric", "cosine_similarity", "negative_mse", "top1_agreement", "cosine_to_baseline", "kl_to_baseline"],
    "train.finetune": ["finetune", "GradualPruning", "Distillation"],
    "train.lottery": ["find_lottery_ticket"],
    "explore.cache": ["ResultCache"],
    "explore.evaluation": ["Evaluator"],
    "explore.pareto": ["pareto_front"],
    "explore.search": ["search"],
    "explore.search_result": ["SearchResult"],
    "explore.sensitivity": ["layer_sensitivity"],
    "explore.sweep": ["sweep", "Sweep", "SweepInterrupted", "grid_recipe"],
    "zoo.digits": ["DigitsCNN", "DigitsMLP", "LeNet5", "default_model"],
}

_LAZY = {name: f"squeezelab.engine.{module}" for module, names in _PUBLIC.items() for name in names}

__getattr__, __dir__ = lazy_attributes("squeezelab.engine", globals(), _LAZY)

__all__ = list(_LAZY)
