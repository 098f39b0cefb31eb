"""What to do to a model: ``Recipe`` and the configs it is built from.

A recipe holds at most one pruning step, at most one quantization step, and the
runtime that will execute the result. Every config is a frozen, keyword-only
dataclass validated on construction, so a recipe is hashable (it keys caches)
and cannot be changed behind a caller's back; use ``dataclasses.replace``.

``to_dict``/``from_dict`` round-trip through plain data (and TOML). Loading
only accepts the config types registered in this module: a dict can never name
an arbitrary class to construct.

Examples:
    >>> from squeezelab.engine.core.recipe import Recipe, LinearQuantization, Simulated
    >>> r = Recipe(quantization=LinearQuantization(bits=4), runtime=Simulated())
    >>> r.label
    'linear4-sym-perchannel (simulated)'
    >>> Recipe.from_dict(r.to_dict()) == r
    True
    >>> Recipe().label
    'fp32'
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from typing import Any, ClassVar

from squeezelab.engine.core.errors import ConfigError

__all__ = [
    "PerTensor",
    "PerChannel",
    "QuantizationConfig",
    "LinearQuantization",
    "KMeansQuantization",
    "FixedPoint",
    "Float16",
    "PruningConfig",
    "MagnitudePruning",
    "ChannelPruning",
    "LayerPruning",
    "NMPruning",
    "Runtime",
    "Onnx",
    "Int8Dynamic",
    "Int8Static",
    "Simulated",
    "WeightOnly",
    "MinMax",
    "Percentile",
    "Entropy",
    "LayerSetting",
    "Recipe",
]

# What Int8Dynamic() quantizes when op_types is None: the Linear layers and the embedding tables
# (Gather of an initializer). A BERT's word embeddings are most of its bytes; ONNX Runtime's own
# quantize_dynamic default quantizes them too.
DYNAMIC_OP_TYPES: tuple[str, ...] = ("MatMul", "Gemm", "Gather")

# Int8Dynamic(fusion=...) values.
_FUSION_CHOICES = ("auto", True, False)

# Allowlist for from_dict: type name -> class. Filled by @_register.
_REGISTRY: dict[str, type] = {}


def _register(cls: type) -> type:
    _REGISTRY[cls.__name__] = cls
    return cls


def _check_int(owner: str, name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(
            f"{owner}: {name}={value!r} is not allowed; {name} must be an integer in "
            f"{low}..{high}."
        )


def _check_bool(owner: str, name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{owner}: {name}={value!r} must be True or False.")


def _check_optional_bool(owner: str, name: str, value: Any) -> None:
    if value is not None and not isinstance(value, bool):
        raise ConfigError(f"{owner}: {name}={value!r} must be True, False or None (decide for this machine).")


class _Config:
    """Shared plain-data behaviour of every config."""

    def to_dict(self) -> dict[str, Any]:
        """Plain data: ``{"type": ClassName, field: value, ...}``; ``None`` fields omitted."""
        out: dict[str, Any] = {"type": type(self).__name__}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is None:
                continue
            out[f.name] = value.to_dict() if isinstance(value, _Config) else value
        return out


def _from_dict(data: Any, expected: type) -> Any:
    """Build a registered config from plain data, refusing unknown types and keys."""
    if isinstance(data, _Config):
        return data
    if not isinstance(data, dict) or "type" not in data:
        raise ConfigError(
            f"expected a dict with a 'type' key for a {expected.__name__}, got {data!r}."
        )
    name = data["type"]
    cls = _REGISTRY.get(name)
    if cls is None or not issubclass(cls, expected):
        allowed = sorted(k for k, v in _REGISTRY.items() if issubclass(v, expected))
        raise ConfigError(
            f"unknown {expected.__name__} type {name!r}; allowed: {', '.join(allowed)}."
        )
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key == "type":
            continue
        if key not in known:
            raise ConfigError(
                f"{name} has no field {key!r}; valid fields: {', '.join(sorted(known)) or 'none'}."
            )
        nested = _NESTED.get((name, key))
        if nested is Calibration and isinstance(value, str):
            kwargs[key] = value  # Int8Static accepts "minmax" / "percentile" / "entropy" itself
        else:
            kwargs[key] = _from_dict(value, nested) if nested else value
    try:
        return cls(**kwargs)
    except TypeError as exc:  # e.g. a list where a tuple was expected
        raise ConfigError(f"cannot build {name} from {data!r}: {exc}") from exc


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
        _check_int("PerChannel", "axis", self.axis, -8, 8)

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
        _check_int("LinearQuantization", "bits", self.bits, 2, 16)
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
        _check_int("KMeansQuantization", "bits", self.bits, 1, 8)
        _check_int("KMeansQuantization", "seed", self.seed, 0, 2**32 - 1)

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
        _check_int("FixedPoint", "total_bits", self.total_bits, 2, 16)
        if self.frac_bits is not None:
            _check_int("FixedPoint", "frac_bits", self.frac_bits, -32, 32)

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


# --------------------------------------------------------------------------- pruning


class PruningConfig(_Config):
    """Base of the pruning steps."""

    @property
    def label(self) -> str:  # pragma: no cover
        raise NotImplementedError


_SCOPES = ("layer", "global")


@_register
@dataclass(frozen=True, kw_only=True)
class MagnitudePruning(PruningConfig):
    """Unstructured pruning: zero the smallest-magnitude weights.

    Args:
        sparsity: fraction of weights set to zero, in [0, 1).
        scope: ``"layer"`` (each layer to ``sparsity``) or ``"global"``
            (one threshold over all chosen layers; layers end up uneven).
    """

    sparsity: float
    scope: str = "layer"

    def __post_init__(self) -> None:
        s = self.sparsity
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0.0 <= s < 1.0:
            raise ConfigError(
                f"MagnitudePruning: sparsity={s!r} must be a number in [0, 1) (0.9 = 90% of weights zero)."
            )
        if self.scope not in _SCOPES:
            raise ConfigError(f"MagnitudePruning: scope={self.scope!r}; use 'layer' or 'global'.")

    @property
    def label(self) -> str:
        return f"magnitude{self.sparsity:.0%}-{self.scope}"


_IMPORTANCES = ("l1", "l2", "taylor")


def _check_ratio(owner: str, name: str, value: Any, example: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ConfigError(f"{owner}: {name}={value!r} must be a number in [0, 1) ({example}).")


def _names(owner: str, value: Any) -> tuple[str, ...]:
    """A tuple of layer names or patterns (TOML and JSON give lists; the config must stay hashable)."""
    if isinstance(value, str):
        value = (value,)
    if isinstance(value, list):
        value = tuple(value)
    if not isinstance(value, tuple) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(
            f"{owner}: ignored={value!r} must be a tuple of layer names or regular expressions matched against "
            "model.named_modules(), e.g. ignored=('fc', 'layer4\\..*')."
        )
    return value


@_register
@dataclass(frozen=True, kw_only=True)
class ChannelPruning(PruningConfig):
    """Structured pruning: physically remove channels (Conv2d), neurons (Linear) and attention heads.

    Layers coupled by residual additions, concatenations, depthwise or grouped convolutions and
    norms are pruned together as one group (Torch-Pruning's dependency graph); groups whose
    channels are the model's outputs keep them. See ``squeezelab.engine.pruning.structured``.

    Args:
        ratio: fraction of each group's channels removed, in [0, 1). In a transformer this prunes
            the feed-forward neurons; the hidden width (the model's output) is kept.
        importance: how channels are ranked: ``"l1"`` or ``"l2"`` norm of the group's weights,
            or ``"taylor"`` (|weight x gradient|, gradients of a cross-entropy on the data given).
            Pass a callable ``importance(group) -> scores`` to ``prune`` for others.
        scope: ``"layer"`` (every group loses ``ratio`` of its channels) or ``"global"`` (one
            threshold over all groups' normalised scores; groups end up uneven).
        round_to: keep channel counts a multiple of this (8 or 16 suit fast kernels); ``None`` keeps
            exact counts.
        heads: also remove ``ratio`` of the attention heads (whole heads) of every Hugging Face
            self-attention layer; without it attention keeps every head.
        ignored: layer names or regular expressions (full match on ``named_modules()`` names) whose
            output channels are kept, with the group they belong to.
    """

    ratio: float
    importance: str = "l1"
    scope: str = "layer"
    round_to: int | None = None
    heads: bool = False
    ignored: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_ratio("ChannelPruning", "ratio", self.ratio, "0.5 = half the channels")
        if self.importance not in _IMPORTANCES:
            raise ConfigError(
                f"ChannelPruning: importance={self.importance!r}; use 'l1', 'l2' or 'taylor', or pass a callable "
                "importance(group) -> scores to squeezelab.prune(..., importance=...)."
            )
        if self.scope not in _SCOPES:
            raise ConfigError(f"ChannelPruning: scope={self.scope!r}; use 'layer' (uniform ratio) or 'global'.")
        if self.round_to is not None:
            _check_int("ChannelPruning", "round_to", self.round_to, 1, 1024)
        _check_bool("ChannelPruning", "heads", self.heads)
        object.__setattr__(self, "ignored", _names("ChannelPruning", self.ignored))

    @property
    def label(self) -> str:
        parts = [f"channels{self.ratio:.0%}-{self.importance}"]
        if self.heads:
            parts.append("heads")
        if self.scope == "global":
            parts.append("global")
        if self.round_to is not None:
            parts.append(f"round{self.round_to}")
        if self.ignored:
            parts.append(f"{len(self.ignored)}ignored")
        return "-".join(parts)


@_register
@dataclass(frozen=True, kw_only=True)
class LayerPruning(PruningConfig):
    """Whole-layer removal: drop residual blocks or transformer layers, the least important first.

    The removable blocks are the repeated blocks whose output has their input's shape (ResNet
    blocks without a projection, MobileNetV2's residual blocks, the layers of a Hugging Face
    encoder); see ``squeezelab.engine.pruning.layer_removal``.

    Args:
        keep: how many removable blocks stay (e.g. 3 of MiniLM's 6 layers); or
        ratio: the fraction of removable blocks dropped, in [0, 1). Give exactly one.
        importance: ``"influence"``: 1 - cosine between a block's input and output on the example
            inputs (ShortGPT's block influence); blocks that change their input least go first.
    """

    keep: int | None = None
    ratio: float | None = None
    importance: str = "influence"

    def __post_init__(self) -> None:
        if (self.keep is None) == (self.ratio is None):
            raise ConfigError(
                f"LayerPruning: give keep= (blocks kept, e.g. keep=3) or ratio= (fraction dropped), not "
                f"{'both' if self.keep is not None else 'neither'}."
            )
        if self.keep is not None:
            _check_int("LayerPruning", "keep", self.keep, 0, 10_000)
        if self.ratio is not None:
            _check_ratio("LayerPruning", "ratio", self.ratio, "0.5 = half the removable blocks")
        if self.importance != "influence":
            raise ConfigError(
                f"LayerPruning: importance={self.importance!r}; use 'influence', or pass a callable "
                "importance(name, block, block_input, block_output) -> score to squeezelab.prune(..., importance=...)."
            )

    @property
    def label(self) -> str:
        return f"layers-keep{self.keep}" if self.keep is not None else f"layers{self.ratio:.0%}"


@_register
@dataclass(frozen=True, kw_only=True)
class NMPruning(PruningConfig):
    """Semi-structured N:M sparsity: keep the ``n`` largest of every ``m`` consecutive weights.

    Groups run along the input channels, at each output row and kernel position,
    as sparse tensor cores expect for 2:4. Layers whose input count is not a
    multiple of ``m`` are left dense.
    """

    n: int = 2
    m: int = 4

    def __post_init__(self) -> None:
        _check_int("NMPruning", "m", self.m, 1, 1024)
        _check_int("NMPruning", "n", self.n, 1, 1024)
        if self.n > self.m:
            raise ConfigError(f"NMPruning: n={self.n} > m={self.m}; keep n of every m weights, n <= m.")

    @property
    def label(self) -> str:
        return f"{self.n}:{self.m}-sparse"


# --------------------------------------------------------------------------- calibration


class Calibration(_Config):
    """How static quantization picks activation ranges from calibration data."""


@_register
@dataclass(frozen=True, kw_only=True)
class MinMax(Calibration):
    """Observed minimum and maximum of each activation."""

    label: ClassVar[str] = "minmax"


@_register
@dataclass(frozen=True, kw_only=True)
class Percentile(Calibration):
    """Clip each activation range at the given percentile of |x|."""

    percentile: float = 99.999

    def __post_init__(self) -> None:
        if not isinstance(self.percentile, (int, float)) or not 50.0 < self.percentile <= 100.0:
            raise ConfigError(f"Percentile: percentile={self.percentile!r} must be in (50, 100].")

    @property
    def label(self) -> str:
        return f"percentile{self.percentile:g}"


@_register
@dataclass(frozen=True, kw_only=True)
class Entropy(Calibration):
    """KL-divergence (TensorRT-style) range selection over a histogram (ONNX Runtime's 128 bins)."""

    label: ClassVar[str] = "entropy"


_CALIBRATION_NAMES = {"minmax": MinMax, "percentile": Percentile, "entropy": Entropy}

# --------------------------------------------------------------------------- runtimes


class Runtime(_Config):
    """Where the compressed model runs. ``executable`` says whether it is real low precision."""

    onnx: ClassVar[bool] = True
    label: ClassVar[str]


@_register
@dataclass(frozen=True, kw_only=True)
class Onnx(Runtime):
    """Float ONNX model in ONNX Runtime (fp32, or fp16 with ``Float16()``). The baseline runtime."""

    label: ClassVar[str] = "onnx"


@_register
@dataclass(frozen=True, kw_only=True)
class Int8Dynamic(Runtime):
    """ONNX Runtime dynamic int8: int8 weights, activations quantized on the fly.

    ``op_types=None`` quantizes ``MatMul``/``Gemm`` and ``Gather`` (embedding
    tables): dynamic int8 convolutions become ``ConvInteger``, which is slower
    than fp32 on x86 and fails to load in some builds. Left at that default,
    ``compress`` refuses a model whose ``MatMul``/``Gemm``/``Gather`` weights are
    under half of its weight elements (a CNN) and says what would quantize it;
    pass ``op_types`` explicitly to quantize only those layers anyway.
    ``per_channel`` (default True: on a real sentence encoder it lifted the
    cosine to fp32 from 0.88 to 0.99) is a bool, not a ``PerChannel`` axis,
    because ONNX Runtime picks the channel axis of each op itself.

    ``reduce_range``: 7-bit weights, needed on x86 CPUs without VNNI, whose int8
    kernels otherwise saturate (see ``squeezelab.engine.core.cpu``). ``None`` decides
    for the machine that compresses; set it explicitly when the deployment CPU
    differs. The value used is recorded in the saved metadata.

    ``fusion``: run ONNX Runtime's transformer optimizer (attention, LayerNorm,
    GELU fusion) before quantizing. ``"auto"`` fuses when the graph is a
    transformer encoder (it has attention: Softmax between MatMuls, and
    LayerNormalization); ``True`` always tries; ``False`` never. When fusion
    fails the unfused graph is quantized and the reason is recorded in
    ``Compressed.details["choices"]``.
    """

    per_channel: bool = True
    op_types: tuple[str, ...] | None = None
    reduce_range: bool | None = None
    fusion: str | bool = "auto"
    label: ClassVar[str] = "int8-dynamic"

    def __post_init__(self) -> None:
        _check_optional_bool("Int8Dynamic", "reduce_range", self.reduce_range)
        _check_bool("Int8Dynamic", "per_channel", self.per_channel)
        if not any(self.fusion is c or (isinstance(c, str) and self.fusion == c) for c in _FUSION_CHOICES):
            raise ConfigError(
                f"Int8Dynamic: fusion={self.fusion!r}; use 'auto' (fuse transformer graphs), True (always try) "
                "or False (quantize the graph as exported)."
            )
        if isinstance(self.op_types, list):
            object.__setattr__(self, "op_types", tuple(self.op_types))
        if self.op_types is not None and (
            not self.op_types or not all(isinstance(o, str) for o in self.op_types)
        ):
            raise ConfigError(
                f"Int8Dynamic: op_types={self.op_types!r} must be None ({DYNAMIC_OP_TYPES}) or a non-empty "
                "tuple of ONNX op names."
            )

    @property
    def quantized_op_types(self) -> tuple[str, ...]:
        """The op types given, or the default ``("MatMul", "Gemm", "Gather")``."""
        return DYNAMIC_OP_TYPES if self.op_types is None else self.op_types


@_register
@dataclass(frozen=True, kw_only=True)
class Int8Static(Runtime):
    """ONNX Runtime static int8 in QDQ format, activation ranges from calibration data.

    Args:
        calibration: ``MinMax()``, ``Percentile(...)``, ``Entropy(...)`` or the
            strings ``"minmax"``, ``"percentile"``, ``"entropy"``.
        per_channel: per-output-channel weight scales.
        activations: ``"uint8"`` (default: ONNX Runtime's fast x86 CPU path, uint8 activations
            x int8 weights, U8S8; measured 3.54x fp32 on a ResNet-18 layout against 1.32x for
            S8S8) or ``"int8"`` (signed, S8S8: what the GPU / TensorRT int8 path wants).
        reduce_range: 7-bit weights; ``None`` decides for this machine (see ``Int8Dynamic``).
        op_types: ONNX op types to quantize; ``None`` = every op ONNX Runtime can.
            ``("MatMul", "Gemm")`` keeps convolutions in fp32, which is faster on
            CPUs whose int8 convolution kernels lose to fp32 (measured on AVX2-only
            CPUs for small channel counts).
    """

    calibration: Calibration = field(default_factory=MinMax)
    per_channel: bool = True
    activations: str = "uint8"
    reduce_range: bool | None = None
    op_types: tuple[str, ...] | None = None
    label: ClassVar[str] = "int8-static"

    def __post_init__(self) -> None:
        _check_optional_bool("Int8Static", "reduce_range", self.reduce_range)
        _check_bool("Int8Static", "per_channel", self.per_channel)
        if isinstance(self.op_types, list):
            object.__setattr__(self, "op_types", tuple(self.op_types))
        if self.op_types is not None and (
            not self.op_types or not all(isinstance(o, str) for o in self.op_types)
        ):
            raise ConfigError(
                f"Int8Static: op_types={self.op_types!r} must be None or a non-empty tuple of ONNX op names."
            )
        if isinstance(self.calibration, str):
            cls = _CALIBRATION_NAMES.get(self.calibration)
            if cls is None:
                raise ConfigError(
                    f"Int8Static: calibration={self.calibration!r}; use one of "
                    f"{', '.join(map(repr, _CALIBRATION_NAMES))} or MinMax()/Percentile()/Entropy()."
                )
            object.__setattr__(self, "calibration", cls())
        if not isinstance(self.calibration, Calibration):
            raise ConfigError(f"Int8Static: calibration={self.calibration!r} is not a calibration method.")
        if self.activations not in ("int8", "uint8"):
            raise ConfigError(f"Int8Static: activations={self.activations!r}; use 'int8' or 'uint8'.")


@_register
@dataclass(frozen=True, kw_only=True)
class Simulated(Runtime):
    """Quantized weights stored packed, executed as dequantized floats in PyTorch.

    Not a real low-precision kernel: results are labelled simulated. Size is the
    byte count of the packed file, latency is PyTorch fp32 eager latency.

    ``coding="huffman"`` stores each quantized weight as Deep Compression does:
    nonzero positions as Huffman-coded gaps and their codes Huffman-coded (pair it
    with pruning); ``"packed"`` stores every code at ``bits`` bits.
    """

    coding: str = "packed"
    label: ClassVar[str] = "simulated"
    onnx: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if self.coding not in ("packed", "huffman"):
            raise ConfigError(f"Simulated: coding={self.coding!r}; use 'packed' or 'huffman'.")


# WeightOnly's choices. ONNX Runtime 1.32's MatMulNBits quantizer also names "gptq" and "k_quant"
# (both through Intel Neural Compressor, not a dependency; GPTQ needs calibration data too) and 2 bits
# (no CPU kernel measured here): refused with the reason rather than offered.
WEIGHT_ONLY_BITS = (4, 8)
WEIGHT_ONLY_BLOCK_SIZES = (16, 32, 64, 128)
WEIGHT_ONLY_METHODS = ("rtn", "hqq")
_REFUSED_METHODS = {
    "gptq": "ONNX Runtime runs GPTQ through Intel Neural Compressor (not installed with squeezelab) and "
    "needs calibration data",
    "k_quant": "ONNX Runtime runs k-quant through Intel Neural Compressor (not installed with squeezelab)",
}


@_register
@dataclass(frozen=True, kw_only=True)
class WeightOnly(Runtime):
    """ONNX Runtime weight-only quantization: 4- or 8-bit block-quantized weights in ``MatMulNBits``.

    Activations stay float; each block of ``block_size`` weights along the input dimension has its own
    scale (and zero point unless ``symmetric``). Built by ONNX Runtime's ``MatMulNBitsQuantizer``; a
    2-D ``nn.Linear`` (exported as ``Gemm``) is rewritten to ``MatMul`` first so it qualifies.

    Args:
        bits: 4 or 8.
        block_size: 16, 32, 64 or 128 weights per scale.
        method: ``"rtn"`` (round to nearest, ONNX Runtime's default quantizer) or ``"hqq"``
            (Half-Quadratic Quantization: optimised scales and zero points, no calibration data;
            asymmetric and 4-bit only: its float zero points have no 8-bit CPU kernel).
        symmetric: no zero points (smaller file, usually a little less faithful).
        embeddings: ``None`` keeps embedding tables (``Gather`` of a weight) float32; ``4`` stores
            them in ``GatherBlockQuantized`` at 4 bits (round to nearest, whatever ``method``).
            ONNX Runtime 1.32's quantizer writes ``GatherBlockQuantized`` at 4 bits only.

    Examples:
        >>> WeightOnly().label
        'weightonly4-b32-rtn'
        >>> WeightOnly(bits=8, block_size=128, symmetric=True, embeddings=4).label
        'weightonly8-b128-rtn-sym-emb4'
    """

    bits: int = 4
    block_size: int = 32
    method: str = "rtn"
    symmetric: bool = False
    embeddings: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or self.bits not in WEIGHT_ONLY_BITS:
            raise ConfigError(
                f"WeightOnly: bits={self.bits!r} is not allowed; ONNX Runtime's MatMulNBits runs bits "
                f"{' or '.join(map(str, WEIGHT_ONLY_BITS))}. Use runtime=Simulated() to study other widths."
            )
        if isinstance(self.block_size, bool) or self.block_size not in WEIGHT_ONLY_BLOCK_SIZES:
            raise ConfigError(
                f"WeightOnly: block_size={self.block_size!r} is not allowed; use one of "
                f"{', '.join(map(str, WEIGHT_ONLY_BLOCK_SIZES))} (weights per scale; smaller is more faithful, larger is smaller)."
            )
        self._check_method()
        _check_bool("WeightOnly", "symmetric", self.symmetric)
        if self.method == "hqq" and self.bits == 8:
            raise ConfigError(
                "WeightOnly: method='hqq' with bits=8 has no CPU kernel (ONNX Runtime's MatMulNBits takes 8-bit "
                "weights only with uint8 zero points, and HQQ's are float); use method='rtn' for 8 bits, or bits=4 with 'hqq'."
            )
        if self.method == "hqq" and self.symmetric:
            raise ConfigError(
                "WeightOnly: method='hqq' optimises a zero point per block, so symmetric=True is not allowed; "
                "use symmetric=False with 'hqq', or method='rtn' for symmetric weights."
            )
        if self.embeddings is not None and (isinstance(self.embeddings, bool) or self.embeddings != 4):
            raise ConfigError(
                f"WeightOnly: embeddings={self.embeddings!r} is not allowed; use None (tables stay float32) or 4 "
                "(GatherBlockQuantized). ONNX Runtime 1.32's quantizer writes embedding tables at 4 bits only; "
                "Int8Dynamic(op_types=('MatMul', 'Gemm', 'Gather')) stores them in 8 bits."
            )

    def _check_method(self) -> None:
        if self.method in WEIGHT_ONLY_METHODS:
            return
        why = _REFUSED_METHODS.get(self.method)
        reason = f" ({why})" if why else ""
        raise ConfigError(
            f"WeightOnly: method={self.method!r} is not supported{reason}; use one of "
            f"{', '.join(map(repr, WEIGHT_ONLY_METHODS))}."
        )

    @property
    def label(self) -> str:  # type: ignore[override]
        """This configuration's short name: ``weightonly4-b32-rtn``."""
        sym = "-sym" if self.symmetric else ""
        emb = f"-emb{self.embeddings}" if self.embeddings else ""
        return f"weightonly{self.bits}-b{self.block_size}-{self.method}{sym}{emb}"


_NESTED: dict[tuple[str, str], type] = {
    ("LinearQuantization", "granularity"): _Config,
    ("Int8Static", "calibration"): Calibration,
}

# --------------------------------------------------------------------------- per-layer settings


@_register
@dataclass(frozen=True, kw_only=True)
class LayerSetting(_Config):
    """Override the recipe's quantization width or pruning amount for one layer (mixed precision).

    Args:
        name: the layer's name in ``model.named_modules()``, e.g. ``"features.0"``.
        bits: weight width for this layer (2..16), or 32 to keep it float32.
            Applies to simulated quantizers (linear, k-means, fixed point); with
            ``Int8Dynamic``/``Int8Static`` only 32 is allowed: the layer's ONNX nodes
            are excluded from int8 (mixed precision with real kernels).
        sparsity: this layer's pruning amount in [0, 1): the fraction of its
            weights zeroed (``MagnitudePruning``) or of its output channels removed
            (``ChannelPruning``; the whole coupled group follows, and naming a Hugging Face
            self-attention module sets the fraction of its heads removed). 0 leaves the layer unpruned.
    """

    name: str
    bits: int | None = None
    sparsity: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"LayerSetting: name={self.name!r} must be a layer name from model.named_modules().")
        if self.bits is not None and self.bits != 32:
            _check_int(f"LayerSetting({self.name!r})", "bits", self.bits, 2, 16)
        s = self.sparsity
        if s is not None and (isinstance(s, bool) or not isinstance(s, (int, float)) or not 0.0 <= s < 1.0):
            raise ConfigError(f"LayerSetting({self.name!r}): sparsity={s!r} must be a number in [0, 1).")
        if self.bits is None and self.sparsity is None:
            raise ConfigError(f"LayerSetting({self.name!r}) sets nothing; give bits= and/or sparsity=.")
        if s is not None:
            object.__setattr__(self, "sparsity", float(s))  # 0 and 0.0 are one setting, with one cache key

    @property
    def label(self) -> str:
        parts = [] if self.bits is None else ["fp32" if self.bits == 32 else f"{self.bits}b"]
        if self.sparsity is not None:
            parts.append(f"{self.sparsity:.0%}")
        return f"{self.name}={'/'.join(parts)}"


# --------------------------------------------------------------------------- recipe


@_register
@dataclass(frozen=True, kw_only=True)
class Recipe(_Config):
    """At most one pruning step, at most one quantization step, and a runtime.

    ``Recipe()`` is the fp32 baseline: the model exported to ONNX unchanged.
    ``layers`` overrides the width or pruning amount of named layers (see
    ``LayerSetting``); every other layer follows the recipe-wide steps.
    """

    pruning: PruningConfig | None = None
    quantization: QuantizationConfig | None = None
    runtime: Runtime = field(default_factory=Onnx)
    layers: tuple[LayerSetting, ...] = ()

    def __post_init__(self) -> None:
        self._check_layers()
        if self.pruning is not None and not isinstance(self.pruning, PruningConfig):
            raise ConfigError(f"Recipe: pruning={self.pruning!r} is not a pruning config.")
        q, rt = self.quantization, self.runtime
        if q is not None and not isinstance(q, QuantizationConfig):
            raise ConfigError(
                f"Recipe: quantization={q!r} is not a quantization config; use e.g. "
                "LinearQuantization(bits=4), KMeansQuantization(bits=4), FixedPoint(), Float16()."
            )
        if not isinstance(rt, Runtime):
            raise ConfigError(
                f"Recipe: runtime={rt!r}; use Onnx(), Int8Dynamic(), Int8Static(), WeightOnly() or Simulated()."
            )
        if isinstance(rt, (Int8Dynamic, Int8Static, WeightOnly)) and q is not None:
            raise ConfigError(
                f"Recipe: {type(rt).__name__}() chooses its own weight quantization, so "
                f"quantization={q!r} cannot be combined with it; drop the quantization step, "
                "or use runtime=Simulated() to study that quantizer."
            )
        if isinstance(rt, Simulated) and rt.coding == "huffman" and not isinstance(
            q, (LinearQuantization, KMeansQuantization, FixedPoint)
        ):
            raise ConfigError(
                "Recipe: Simulated(coding='huffman') codes quantized weights; add "
                "quantization=KMeansQuantization(...) (Deep Compression) or LinearQuantization(...)."
            )
        if isinstance(rt, Onnx) and q is not None and not isinstance(q, Float16):
            raise ConfigError(
                f"Recipe: {q.label} has no ONNX Runtime kernel; use runtime=Simulated() for it "
                "(results are labelled simulated), or Int8Static()/Int8Dynamic() for real int8."
            )

    def _check_layers(self) -> None:
        layers = self.layers
        if isinstance(layers, list):  # from_dict / TOML give lists; the recipe must stay hashable
            layers = tuple(_from_dict(item, LayerSetting) for item in layers)
            object.__setattr__(self, "layers", layers)
        if not isinstance(layers, tuple) or not all(isinstance(item, LayerSetting) for item in layers):
            raise ConfigError(f"Recipe: layers={layers!r} must be a tuple of LayerSetting(name=..., ...).")
        names = [item.name for item in layers]
        if len(set(names)) != len(names):
            raise ConfigError(f"Recipe: layers names {sorted({n for n in names if names.count(n) > 1})} twice.")
        if isinstance(self.runtime, (Int8Dynamic, Int8Static)):
            wrong = [item.name for item in layers if item.bits is not None and item.bits != 32]
            if wrong:
                raise ConfigError(
                    f"Recipe: {type(self.runtime).__name__}() runs every layer at 8 bits or keeps it float; "
                    f"layers {wrong} ask for another width. Use bits=32 to keep a layer float (mixed precision), "
                    "or runtime=Simulated() with a quantizer to study other widths."
                )
        elif any(item.bits is not None for item in layers) and not isinstance(
            self.quantization, (LinearQuantization, KMeansQuantization, FixedPoint)
        ):
            raise ConfigError(
                "Recipe: per-layer bits need a simulated weight quantizer to override; add "
                "quantization=LinearQuantization(...), KMeansQuantization(...) or FixedPoint(...) with runtime=Simulated()."
            )
        q = self.quantization
        low, high = (1, 8) if isinstance(q, KMeansQuantization) else (2, 16)
        for item in layers:
            if item.bits is not None and item.bits != 32 and not low <= item.bits <= high:
                raise ConfigError(
                    f"Recipe: LayerSetting({item.name!r}, bits={item.bits}) is outside {type(q).__name__}'s "
                    f"{low}..{high} bits (or 32 to keep the layer float)."
                )
        if any(item.sparsity is not None for item in layers) and not isinstance(
            self.pruning, (MagnitudePruning, ChannelPruning)
        ):
            raise ConfigError(
                "Recipe: per-layer sparsity needs a pruning step to override; add "
                "pruning=MagnitudePruning(sparsity=0.0) (or ChannelPruning(ratio=0.0))."
            )

    def layer_bits(self) -> dict[str, int]:
        """Per-layer widths set by ``layers`` (32 = kept float32)."""
        return {item.name: item.bits for item in self.layers if item.bits is not None}

    def layer_sparsity(self) -> dict[str, float]:
        """Per-layer pruning amounts set by ``layers``."""
        return {item.name: float(item.sparsity) for item in self.layers if item.sparsity is not None}

    @property
    def executable(self) -> bool:
        """True when the result runs as real kernels at the stored precision."""
        return self.runtime.onnx

    @property
    def bits(self) -> int:
        """Stored width of the weights."""
        if self.quantization is not None:
            return self.quantization.bits
        if isinstance(self.runtime, (Int8Dynamic, Int8Static)):
            return 8
        if isinstance(self.runtime, WeightOnly):
            return self.runtime.bits
        return 32

    @property
    def label(self) -> str:
        """Short name for tables: what was done, and ``(simulated)`` when it is."""
        parts = []
        if self.pruning is not None:
            parts.append(self.pruning.label)
        if self.quantization is not None:
            parts.append(self.quantization.label)
        rt = self.runtime
        if isinstance(rt, (Int8Dynamic, Int8Static)):
            pc = "-perchannel" if rt.per_channel else ""
            # reduce_range appears only when set explicitly; None is decided per machine.
            rr = {None: "", True: "-7bit", False: "-8bit"}[rt.reduce_range]
        if isinstance(rt, Int8Dynamic):
            pc = "" if rt.per_channel else "-pertensor"  # per-channel is its default: the short label
            # The explicit default makes the same model as None, so it reads the same.
            ops = "" if rt.quantized_op_types == DYNAMIC_OP_TYPES else "-" + "+".join(o.lower() for o in rt.op_types)
            fuse = {"auto": "", True: "-fused", False: "-unfused"}[rt.fusion]
            parts.append(f"int8-dynamic{pc}{ops}{rr}{fuse}")
        elif isinstance(rt, Int8Static):
            act = "" if rt.activations == "uint8" else "-s8act"
            ops = "" if rt.op_types is None else "-" + "+".join(o.lower() for o in rt.op_types)
            parts.append(f"int8-static-{rt.calibration.label}{pc}{act}{ops}{rr}")
        elif isinstance(rt, WeightOnly):
            parts.append(rt.label)
        if self.layers:
            parts.append(_layers_label(self.layers))
        if isinstance(rt, Simulated) and rt.coding == "huffman":
            parts.append("huffman")
        if not parts:
            parts.append("fp32")
        text = " + ".join(parts)
        return text + " (simulated)" if not self.executable else text

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        del out["type"]
        if self.layers:
            out["layers"] = [item.to_dict() for item in self.layers]
        else:
            del out["layers"]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        """Inverse of ``to_dict``; only registered config types are accepted."""
        if not isinstance(data, dict):
            raise ConfigError(f"Recipe.from_dict needs a dict, got {type(data).__name__}.")
        return _from_dict({"type": "Recipe", **data}, Recipe)

    def to_toml(self) -> str:
        import tomli_w

        return tomli_w.dumps(self.to_dict())

    @classmethod
    def from_toml(cls, text: str) -> Recipe:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"recipe TOML does not parse: {exc}") from exc
        return cls.from_dict(data)


_NESTED.update(
    {
        ("Recipe", "pruning"): PruningConfig,
        ("Recipe", "quantization"): QuantizationConfig,
        ("Recipe", "runtime"): Runtime,
    }
)


def _layers_label(layers: tuple[LayerSetting, ...], shown: int = 6) -> str:
    """``[a=4b b=3b/50%]``, or for many layers a count of each setting: ``[37 layers: 8b x30, 4b x7]``.

    (Labels name a recipe in tables and messages; the full per-layer list is in ``to_dict()``.)
    """
    if len(layers) <= shown:
        return "[" + " ".join(item.label for item in layers) + "]"
    counts: dict[str, int] = {}
    for item in layers:
        setting = item.label.split("=", 1)[1]
        counts[setting] = counts.get(setting, 0) + 1
    parts = ", ".join(f"{setting} x{n}" for setting, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    return f"[{len(layers)} layers: {parts}]"
