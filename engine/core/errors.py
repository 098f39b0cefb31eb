"""The ``SqueezeError`` hierarchy.

Every error squeezelab raises on bad input is a ``SqueezeError`` subclass whose
message says what was passed, what is allowed, and how to fix it. Where a
built-in exception type describes the category too (``ValueError``,
``TypeError``), the subclass inherits from it as well so callers who catch the
built-in keep working.
"""

from __future__ import annotations

__all__ = [
    "SqueezeError",
    "ConfigError",
    "ModelError",
    "InvalidWeightsError",
    "StructuredPruningError",
    "ExampleInputError",
    "ExportError",
    "UnexportableLayerError",
    "ExportMismatchError",
    "CalibrationError",
    "QuantizationError",
    "DataError",
    "ProviderError",
    "ProviderUnavailableError",
    "ProviderFallbackError",
    "ArtifactError",
    "ArtifactPathError",
    "CacheError",
    "ModelTooLargeError",
]


class SqueezeError(Exception):
    """Base class of every error squeezelab raises on purpose."""


class ConfigError(SqueezeError, ValueError):
    """A recipe or config value is outside what is allowed."""


class ModelError(SqueezeError, TypeError):
    """The model is not something squeezelab can work on."""


class InvalidWeightsError(ModelError, ValueError):
    """The model holds NaN or Inf weights."""


class StructuredPruningError(ModelError, ValueError):
    """Channels, heads or layers cannot be removed as asked (the message names the group or layer)."""


class ExampleInputError(SqueezeError, ValueError):
    """``example_inputs`` are missing or do not fit the model."""


class ExportError(SqueezeError, RuntimeError):
    """``torch.onnx.export`` failed."""


class UnexportableLayerError(ExportError):
    """A specific layer of the model cannot be exported to ONNX.

    Attributes:
        layer: fully qualified name of the first layer that fails on its own.
    """

    def __init__(self, message: str, layer: str) -> None:
        super().__init__(message)
        self.layer = layer


class ExportMismatchError(ExportError):
    """The exported ONNX model computes something else than the PyTorch model on some inputs.

    Attributes:
        difference: the largest absolute difference found.
        where: which inputs showed it (``"the example inputs"``, ``"calibration_data sample 3"``).
    """

    def __init__(self, message: str, difference: float = float("nan"), where: str = "") -> None:
        super().__init__(message)
        self.difference = difference
        self.where = where


class CalibrationError(SqueezeError, ValueError):
    """Static quantization was asked for without usable calibration data."""


class QuantizationError(SqueezeError, ValueError):
    """A quantizer wrote a model that must not be returned (e.g. a non-finite scale; the message names the tensor)."""


class DataError(SqueezeError, ValueError):
    """Evaluation or calibration data has the wrong form."""


class ProviderError(SqueezeError, RuntimeError):
    """An ONNX Runtime execution provider problem."""


class ProviderUnavailableError(ProviderError):
    """The requested execution provider is not in this onnxruntime build."""


class ProviderFallbackError(ProviderError):
    """Nodes that should run on the requested provider run on the CPU instead."""


class ArtifactError(SqueezeError, ValueError):
    """A saved squeezelab artifact is corrupt or of an unknown version."""


class ArtifactPathError(ArtifactError, ConfigError, OSError):
    """A path to save to or load from cannot be used: missing, a folder, under a file, or not writable.

    A bad path argument (so also a ``ConfigError``) and a file-system problem (so also an ``OSError``,
    as the built-in error it replaces was), raised before any work where the path is known up front.

    Attributes:
        path: the path that was given.
    """

    def __init__(self, message: str, path: object = None) -> None:
        super().__init__(message)
        self.path = path


class CacheError(SqueezeError, OSError):
    """The result cache folder cannot be created, written to or read.

    Attributes:
        path: the folder or file that failed.
        sweep: when raised by ``sweep``, the points finished before the failure (like
            ``SweepError.sweep``); otherwise None.
    """

    def __init__(self, message: str, path: object = None) -> None:
        super().__init__(message)
        self.path = path
        self.sweep: object = None


class ModelTooLargeError(ExportError):
    """A step cannot hold the model as one ONNX protobuf (ONNX's 2 GB limit).

    Attributes:
        step: the step that cannot (``"export"``, ...).
        size_bytes: the model's size that step would have to hold.
        limit_bytes: the limit it was checked against.
    """

    def __init__(self, message: str, step: str = "", size_bytes: int = 0, limit_bytes: int = 0) -> None:
        super().__init__(message)
        self.step = step
        self.size_bytes = size_bytes
        self.limit_bytes = limit_bytes
