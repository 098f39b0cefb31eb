"""Fidelity steps: what is done to the float model before a runtime quantizes it.

Keeping a layer float buys fidelity with speed. These steps change *how* the layers are quantized
instead, and leave every layer in int8: each rewrites the PyTorch model (a copy) before export so
that the runtime's quantizer loses less, and each is exact in float32 where its algorithm says it
is (the result records what each step did).

- ``Smoothing(alpha=...)``: SmoothQuant, for transformers under ``Int8Dynamic`` / ``Int8Static``:
  activation outliers moved into the weights (``engine.quantization.smoothing``).
- ``Equalization()``: cross-layer equalisation, for CNNs under static int8: per-channel ranges of
  consecutive convolutions evened out through their ReLU (``engine.quantization.equalization``).
- ``AdaRound()``: each int8 weight rounded up or down so that the layer's output moves least on the
  calibration data (Nagel et al., 2020), on ONNX Runtime's own grid (``engine.quantization.adaround``).
- ``BiasCorrection()``: the mean output shift each layer's int8 weights cause, measured on the
  calibration data and subtracted from its bias (``engine.quantization.bias_correction``).

A recipe lists them in ``Recipe(transforms=(...))``; ``transforms=None`` (the default) lets
``compress`` choose for the model and runtime at hand (and record why), ``()`` applies none.

Examples:
    >>> Smoothing().label, Smoothing(alpha=0.5).label
    ('smooth-auto', 'smooth0.5')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from squeezelab.engine.core.arguments import as_integer, as_real
from squeezelab.engine.core.configs import _Config, _register
from squeezelab.engine.core.errors import ConfigError

__all__ = ["Transform", "Smoothing", "Equalization", "AdaRound", "BiasCorrection", "TRANSFORM_ORDER"]


class Transform(_Config):
    """A step applied to the float model before the runtime quantizes it."""

    label: ClassVar[str] = "transform"


@_register
@dataclass(frozen=True, kw_only=True)
class Smoothing(Transform):
    """SmoothQuant: divide each Linear group's input channels by ``s``, multiply the weights by it.

    Args:
        alpha: migration strength in [0, 1]: ``s_j = max|x_j|^alpha / max|W_j|^(1 - alpha)``
            (0 leaves the activations alone, 1 moves all their range into the weights); ``"auto"``
            chooses it per group of layers on the calibration data (the alpha with the smallest
            simulated int8 output error).
    """

    alpha: float | str = "auto"

    def __post_init__(self) -> None:
        if self.alpha == "auto":
            return
        number = as_real(self.alpha)
        if number is None or not 0.0 <= number <= 1.0:
            raise ConfigError(
                f"Smoothing: alpha={self.alpha!r} is not allowed; use a number in [0, 1] (0.5 splits the range "
                "evenly between activations and weights) or 'auto' (chosen per layer group on calibration data)."
            )
        object.__setattr__(self, "alpha", number)

    @property
    def label(self) -> str:  # type: ignore[override]
        return "smooth-auto" if self.alpha == "auto" else f"smooth{self.alpha:g}"


@_register
@dataclass(frozen=True, kw_only=True)
class Equalization(Transform):
    """Cross-layer equalisation (Nagel et al., 2019): even out per-channel weight ranges of
    consecutive convolutions joined by a ReLU, which commutes with a positive per-channel scale."""

    label: ClassVar[str] = "cle"


@_register
@dataclass(frozen=True, kw_only=True)
class AdaRound(Transform):
    """Adaptive rounding (Nagel et al., 2020): per weight, up or down, whichever moves the layer's output least
    on the calibration data (each layer's inputs taken from the float model); the weights are written on the
    grid ONNX Runtime's quantizer computes, so its rounding reproduces every choice.

    Args:
        relaxation: steps of the paper's continuous relaxation (Adam on a rectified sigmoid, annealed
            regulariser) before the exact coordinate descent that finishes every layer; 0 (the default)
            runs the descent alone (measured as good and several times faster here).
    """

    relaxation: int = 0

    def __post_init__(self) -> None:
        number = as_integer(self.relaxation)
        if number is None or number < 0:
            raise ConfigError(
                f"AdaRound: relaxation={self.relaxation!r} is not allowed; use an int >= 0 (0, the default: the "
                "coordinate descent alone; 1000: the paper's relaxation first, seconds per layer)."
            )
        object.__setattr__(self, "relaxation", number)

    @property
    def label(self) -> str:  # type: ignore[override]
        return "adaround" if not self.relaxation else f"adaround-relax{self.relaxation}"


@_register
@dataclass(frozen=True, kw_only=True)
class BiasCorrection(Transform):
    """Empirical bias correction: subtract the mean output shift int8 weights cause, per channel,
    measured on the calibration data."""

    label: ClassVar[str] = "biascorr"


# The order steps run in: equalisation changes the weights AdaRound rounds; bias correction measures the
# shift of the weights AdaRound chose.
TRANSFORM_ORDER: tuple[type, ...] = (Smoothing, Equalization, AdaRound, BiasCorrection)
