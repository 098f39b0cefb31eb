"""Where a compressed model runs (``Onnx``, ``Int8Dynamic``, ``Int8Static``, ``WeightOnly``, ``Simulated``)
and how static int8 calibrates its activation ranges (``MinMax``, ``Percentile``, ``Entropy``).

Examples:
    >>> from squeezelab.engine.core.runtimes import Int8Static
    >>> Int8Static(calibration="entropy").calibration.label
    'entropy'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from squeezelab.engine.core.arguments import as_integer, as_real
from squeezelab.engine.core.configs import _NAMED_FIELDS, _NESTED, _check_bool, _check_optional_bool, _Config, _register
from squeezelab.engine.core.errors import ConfigError

__all__ = [
    "MinMax",
    "Percentile",
    "Entropy",
    "Runtime",
    "Onnx",
    "Int8Dynamic",
    "Int8Static",
    "Simulated",
    "WeightOnly",
]

# What Int8Dynamic() quantizes when op_types is None: the Linear layers and the embedding tables
# (Gather of an initializer). A BERT's word embeddings are most of its bytes; ONNX Runtime's own
# quantize_dynamic default quantizes them too.
DYNAMIC_OP_TYPES: tuple[str, ...] = ("MatMul", "Gemm", "Gather")

# Int8Dynamic(fusion=...) values.
_FUSION_CHOICES = ("auto", True, False)


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
        number = as_real(self.percentile)
        if number is None or not 50.0 < number <= 100.0:
            raise ConfigError(
                f"Percentile: percentile={self.percentile!r} must be a number in (50, 100], e.g. 99.999 "
                "(clip each range at that percentile of |x|)."
            )
        object.__setattr__(self, "percentile", number)

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


# WeightOnly's choices. ONNX Runtime 1.32's MatMulNBits quantizer also names "k_quant" (through Intel
# Neural Compressor, not a dependency) and 2 bits (no CPU kernel measured here): refused with the reason.
WEIGHT_ONLY_BITS = (4, 8)
WEIGHT_ONLY_BLOCK_SIZES = (16, 32, 64, 128)
# "auto": GPTQ when compress is given calibration data, round to nearest without (recorded in the details).
WEIGHT_ONLY_METHODS = ("auto", "rtn", "gptq", "hqq")
# MatMulNBits' accuracy_level: 0 leaves the kernel's choice (float activations), 4 quantizes the
# activations to int8 per block and multiplies in int8 (ONNX Runtime's CompInt8 kernels).
WEIGHT_ONLY_COMPUTE = {"float": 0, "int8": 4}
# embeddings=: 4 stores the tables in GatherBlockQuantized, 32 keeps them float32, None decides (4 where there are tables).
WEIGHT_ONLY_EMBEDDINGS = (4, 32)
_REFUSED_METHODS = {
    "k_quant": "ONNX Runtime runs k-quant through Intel Neural Compressor (not installed with squeezelab)",
}


@_register
@dataclass(frozen=True, kw_only=True)
class WeightOnly(Runtime):
    """ONNX Runtime weight-only quantization: 4- or 8-bit block-quantized weights in ``MatMulNBits``.

    Activations stay float; each block of ``block_size`` weights along the input dimension has its own
    scale (and zero point unless ``symmetric``). A 2-D ``nn.Linear`` (exported as ``Gemm``) is rewritten
    to ``MatMul`` first so it qualifies. The default on the real all-MiniLM-L6-v2 (4 bits, blocks of 32,
    embedding tables at 4 bits, GPTQ calibrated on 125 sentences, 128 others evaluated) measured 0.163x its
    fp32 file at a mean cosine of 0.990 to fp32; round to nearest, the same file: 0.974. Blocks of 16 gave
    0.993 at 0.198x, blocks of 64 0.987 at 0.146x.

    Args:
        bits: 4 or 8.
        block_size: 16, 32, 64 or 128 weights per scale.
        method: ``"auto"`` (default: ``"gptq"`` when ``compress`` is given ``calibration_data``, ``"rtn"``
            without; the choice and why are in ``details["weight_only_method_reason"]``), ``"gptq"``
            (GPTQ, Frantar et al. 2022: each layer's weights chosen to minimise its output error on the
            calibration data; needs ``calibration_data``), ``"rtn"`` (round to nearest, ONNX Runtime's
            default quantizer) or ``"hqq"`` (Half-Quadratic Quantization: optimised scales and zero points,
            no calibration data; asymmetric and 4-bit only: its float zero points have no 8-bit CPU kernel).
        symmetric: no zero points (smaller file, usually a little less faithful).
        embeddings: ``None`` (default) stores embedding tables (``Gather`` of a weight) at 4 bits in
            ``GatherBlockQuantized`` where the graph has any; ``4`` asks for them (refused on a graph
            without); ``32`` keeps them float32. Round to nearest whatever ``method`` (a table has no
            layer input to calibrate on); ONNX Runtime 1.32 writes ``GatherBlockQuantized`` at 4 bits only.
        compute: ``"float"`` (the kernel dequantizes the weights and multiplies float activations),
            ``"int8"`` (``accuracy_level=4``: activations quantized to int8 per block, int8 products) or
            ``None`` (default: decided for the machine that compresses, as ``reduce_range`` is: ``"int8"``
            where int8 dot products are native (AVX-512 VNNI / AVX-VNNI, ARM dot product), ``"float"`` on
            AVX2-only x86). Measured on MiniLM: int8 1.18x fp32 against 0.88x for float on a VNNI EPYC,
            the reverse (0.63-0.89x against 0.88-1.02x) on an AVX2-only one. Set it when the deployment
            CPU differs.

    Examples:
        >>> WeightOnly().label
        'weightonly4-b32-auto'
        >>> WeightOnly(bits=8, block_size=128, method="rtn", symmetric=True, embeddings=4).label
        'weightonly8-b128-rtn-sym-emb4'
        >>> WeightOnly(method="gptq", embeddings=32, compute="int8").label
        'weightonly4-b32-gptq-emb32-int8compute'
    """

    bits: int = 4
    block_size: int = 32
    method: str = "auto"
    symmetric: bool = False
    embeddings: int | None = None
    compute: str | None = None

    def __post_init__(self) -> None:
        # 4.0 == 4, so a membership test alone would let floats through to fail inside compress.
        bits, block_size = as_integer(self.bits), as_integer(self.block_size)
        if bits not in WEIGHT_ONLY_BITS:
            raise ConfigError(
                f"WeightOnly: bits={self.bits!r} is not allowed; ONNX Runtime's MatMulNBits runs bits "
                f"{' or '.join(map(str, WEIGHT_ONLY_BITS))} (an integer). Use runtime=Simulated() to study other widths."
            )
        if block_size not in WEIGHT_ONLY_BLOCK_SIZES:
            raise ConfigError(
                f"WeightOnly: block_size={self.block_size!r} is not allowed; use one of "
                f"{', '.join(map(str, WEIGHT_ONLY_BLOCK_SIZES))} (an integer: weights per scale; smaller is more "
                "faithful, larger is smaller)."
            )
        object.__setattr__(self, "bits", bits)
        object.__setattr__(self, "block_size", block_size)
        self._check_method()
        _check_bool("WeightOnly", "symmetric", self.symmetric)
        if self.compute is not None and (not isinstance(self.compute, str) or self.compute not in WEIGHT_ONLY_COMPUTE):
            raise ConfigError(
                f"WeightOnly: compute={self.compute!r} is not allowed; use 'float' (float activations), 'int8' "
                "(MatMulNBits accuracy_level=4: int8 activations per block) or None (decided for this CPU)."
            )
        self._check_hqq()
        self._check_embeddings()

    def _check_method(self) -> None:
        if isinstance(self.method, str) and self.method in WEIGHT_ONLY_METHODS:
            return
        why = _REFUSED_METHODS.get(self.method) if isinstance(self.method, str) else None
        reason = f" ({why})" if why else ""
        raise ConfigError(
            f"WeightOnly: method={self.method!r} is not supported{reason}; use one of "
            f"{', '.join(map(repr, WEIGHT_ONLY_METHODS))}."
        )

    def _check_hqq(self) -> None:
        if self.method != "hqq":
            return
        if self.compute == "int8":
            raise ConfigError(
                "WeightOnly: method='hqq' with compute='int8' has no int8 kernel (HQQ's zero points are float, and "
                "ONNX Runtime's MatMulNBits then dequantizes and multiplies in float whatever accuracy_level says); "
                "use method='rtn' or 'gptq' for int8 compute, or compute='float' with 'hqq'."
            )
        if self.bits == 8:
            raise ConfigError(
                "WeightOnly: method='hqq' with bits=8 has no CPU kernel (ONNX Runtime's MatMulNBits takes 8-bit "
                "weights only with uint8 zero points, and HQQ's are float); use method='rtn' for 8 bits, or bits=4 with 'hqq'."
            )
        if self.symmetric:
            raise ConfigError(
                "WeightOnly: method='hqq' optimises a zero point per block, so symmetric=True is not allowed; "
                "use symmetric=False with 'hqq', or method='rtn' for symmetric weights."
            )

    def _check_embeddings(self) -> None:
        if self.embeddings is None:
            return
        if as_integer(self.embeddings) not in WEIGHT_ONLY_EMBEDDINGS:
            raise ConfigError(
                f"WeightOnly: embeddings={self.embeddings!r} is not allowed; use None (4 bits where the graph has "
                "embedding tables), the integer 4 (GatherBlockQuantized: ONNX Runtime 1.32's quantizer writes tables "
                "at 4 bits only) or 32 (tables stay float32); Int8Dynamic(op_types=('MatMul', 'Gemm', 'Gather')) "
                "stores them in 8 bits."
            )
        object.__setattr__(self, "embeddings", as_integer(self.embeddings))

    @property
    def reads_calibration(self) -> bool:
        """True when ``compress``'s ``calibration_data`` changes the result (GPTQ, or ``"auto"`` choosing it)."""
        return self.method in ("gptq", "auto")

    @property
    def label(self) -> str:  # type: ignore[override]
        """This configuration's short name: ``weightonly4-b32-auto``; what ``None`` left open is not in it."""
        sym = "-sym" if self.symmetric else ""
        emb = f"-emb{self.embeddings}" if self.embeddings else ""
        compute = f"-{self.compute}compute" if self.compute else ""
        return f"weightonly{self.bits}-b{self.block_size}-{self.method}{sym}{emb}{compute}"


_NESTED[("Int8Static", "calibration")] = Calibration
_NAMED_FIELDS.add(("Int8Static", "calibration"))
