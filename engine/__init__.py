"""squeezelab.engine: everything that transforms or measures a model.

No ipywidgets, plotly or pytest imports here, and onnxruntime / onnx are
imported only inside the functions that need them.
"""

from squeezelab.engine.artifact import load_packed
from squeezelab.engine.compress import Compressed, compress
from squeezelab.engine.default_models import DigitsCNN, DigitsMLP, LeNet5, default_model
from squeezelab.engine.errors import (
    ArtifactError,
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
    UnexportableLayerError,
)
from squeezelab.engine.measure import Metrics, measure, top1_accuracy
from squeezelab.engine.quantize import quantize, quantize_
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
)

__all__ = [
    "Recipe",
    "LinearQuantization",
    "KMeansQuantization",
    "FixedPoint",
    "Float16",
    "PerTensor",
    "PerChannel",
    "Onnx",
    "Int8Dynamic",
    "Int8Static",
    "Simulated",
    "MinMax",
    "Percentile",
    "Entropy",
    "compress",
    "Compressed",
    "quantize",
    "quantize_",
    "measure",
    "Metrics",
    "top1_accuracy",
    "load_packed",
    "default_model",
    "DigitsCNN",
    "DigitsMLP",
    "LeNet5",
    "SqueezeError",
    "ConfigError",
    "ModelError",
    "InvalidWeightsError",
    "ExampleInputError",
    "ExportError",
    "UnexportableLayerError",
    "CalibrationError",
    "DataError",
    "ProviderError",
    "ProviderUnavailableError",
    "ProviderFallbackError",
    "ArtifactError",
]
