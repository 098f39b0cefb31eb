"""Weight quantization steps (``LinearQuantization``, ``KMeansQuantization``, ``FixedPoint``,
``Float16``) and the granularity value objects (``PerTensor``, ``PerChannel``) they take.

Examples:
    >>> from squeezelab.engine.core.quantizers import LinearQuantization, PerTensor
    >>> LinearQuantization(bits=4, granularity=PerTensor()).label
    'linear4-sym-pertensor'
    >>> LinearQuantization(bits=4).with_bits(3).label
    'linear3-sym-perchannel'
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

from squeezelab.engine.core.configs import _NESTED, _Config, _int_field, _register
from squeezelab.engine.core.errors import ConfigError

__all__ = [
    "PerTensor",
    "PerChannel",
    "QuantizationConfig",
    "LinearQuantization",
    "KMeansQuantization",
    "FixedPoint",
    "Float16",
]


# --------------------------------------------------------------------------- granularity


@_register
@dataclass(frozen=True, kw_only=True)
class PerTensor(_Config):
    """One scale (and zero point) for the whole tensor."""

    label: ClassVar[str] = "pertensor"


@_register
@dataclass(frozen=True, kw_only=True)
class PerChannel(_Config):
    """One scale per slice along ``axis`` (0 = output channels of Conv/Linear weights)."""

    axis: int = 0

    def __post_init__(self) -> None:
        _int_field(self, "axis", -8, 8)

    @property
    def label(self) -> str:
        return "perchannel" if self.axis == 0 else f"perchannel{self.axis}"


Granularity = PerTensor | PerChannel

# --------------------------------------------------------------------------- quantization


class QuantizationConfig(_Config):
    """Base of the weight quantization steps; ``bits`` is the stored width."""

    bits: int

    @property
    def label(self) -> str:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def with_bits(self, bits: int) -> QuantizationConfig:
        """The same quantizer at another stored width (validated like a new config)."""
        return dataclasses.replace(self, bits=bits)  # type: ignore[call-arg]


@_register
@dataclass(frozen=True, kw_only=True)
class LinearQuantization(QuantizationConfig):
    """Uniform (linear) quantization of weights, with ONNX ``QuantizeLinear`` semantics.

    Args:
        bits: stored width, 2..16.
        symmetric: True: signed codes, zero point 0, narrow range
            ``[-(2^(b-1)-1), 2^(b-1)-1]`` (ONNX Runtime's choice for weights).
            False: unsigned codes ``[0, 2^b-1]`` with a zero point (affine).
        granularity: ``PerChannel(axis=0)`` or ``PerTensor()``.
    """

    bits: int = 8
    symmetric: bool = True
    granularity: Granularity = field(default_factory=PerChannel)

    def __post_init__(self) -> None:
        _int_field(self, "bits", 2, 16)
        if not isinstance(self.symmetric, bool):
            raise ConfigError(f"LinearQuantization: symmetric={self.symmetric!r} must be True or False.")
        if not isinstance(self.granularity, (PerTensor, PerChannel)):
            raise ConfigError(
                f"LinearQuantization: granularity={self.granularity!r}; use PerTensor() or PerChannel(axis=0)."
            )

    @property
    def label(self) -> str:
        kind = "sym" if self.symmetric else "affine"
        return f"linear{self.bits}-{kind}-{self.granularity.label}"


@_register
@dataclass(frozen=True, kw_only=True)
class KMeansQuantization(QuantizationConfig):
    """Weight sharing: ``2^bits`` centroids per layer (scikit-learn KMeans), codes packed to ``bits``."""

    bits: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        _int_field(self, "bits", 1, 8)
        _int_field(self, "seed", 0, 2**32 - 1)

    @property
    def label(self) -> str:
        return f"kmeans{self.bits}" + (f"-seed{self.seed}" if self.seed else "")


@_register
@dataclass(frozen=True, kw_only=True)
class FixedPoint(QuantizationConfig):
    """Signed fixed point Qm.n with ``total_bits`` = sign + m + n.

    ``frac_bits=None`` is dynamic fixed point: each layer gets the fractional
    length that just covers its largest magnitude (Ristretto's scheme).
    """

    total_bits: int = 8
    frac_bits: int | None = None

    def __post_init__(self) -> None:
        _int_field(self, "total_bits", 2, 16)
        if self.frac_bits is not None:
            _int_field(self, "frac_bits", -32, 32)

    @property
    def bits(self) -> int:  # type: ignore[override]
        return self.total_bits

    def with_bits(self, bits: int) -> FixedPoint:
        return dataclasses.replace(self, total_bits=bits)

    @property
    def label(self) -> str:
        if self.frac_bits is None:
            return f"fixed{self.total_bits}-dynamic"
        return f"fixed{self.total_bits}-q{self.total_bits - 1 - self.frac_bits}.{self.frac_bits}"


@_register
@dataclass(frozen=True, kw_only=True)
class Float16(QuantizationConfig):
    """IEEE half precision weights (and, in ONNX, activations)."""

    label: ClassVar[str] = "float16"

    def with_bits(self, bits: int) -> Float16:
        if bits != 16:
            raise ConfigError(f"float16 stores 16 bits; bits={bits} does not apply.")
        return self

    @property
    def bits(self) -> int:  # type: ignore[override]
        return 16


_NESTED[("LinearQuantization", "granularity")] = _Config
