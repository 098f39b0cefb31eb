"""squeezelab.engine: everything that transforms or measures a model.

No ipywidgets, plotly or pytest imports here. This package shows no names of its own: the public
ones are shown by ``squeezelab`` and its sub-modules (``squeezelab.errors``, ``squeezelab.metrics``, ...),
listed once in ``squeezelab._public``, and load lazily (PEP 562): importing
``squeezelab.engine.core.errors`` or the pytest plugin does not import torch; the first use of
``compress`` does.

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
importing a module never rebinds a public name of ``squeezelab`` (tests/test_lean_import.py).
"""
