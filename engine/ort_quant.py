"""Real int8 and float16 ONNX models, made by ONNX Runtime's own tooling.

``onnxruntime.quantization`` does the quantization (dynamic, and static QDQ
with MinMax / Percentile / Entropy calibration); float16 conversion uses
``onnxruntime.transformers.float16``. squeezelab only chooses the arguments,
feeds calibration batches, and keeps every temporary file in a temporary
directory.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from squeezelab.engine.cpu import default_reduce_range
from squeezelab.engine.errors import CalibrationError
from squeezelab.engine.recipe import Entropy, Int8Dynamic, Int8Static, MinMax, Percentile

__all__ = ["resolve_reduce_range", "quantize_dynamic_onnx", "quantize_static_onnx", "convert_float16_onnx"]

log = logging.getLogger(__name__)


class _DropPreprocessAdvice(logging.Filter):
    """Drops ONNX Runtime's "consider pre-processing" advice, which squeezelab has followed or tried."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing" not in record.getMessage()


@contextlib.contextmanager
def _quiet_onnxruntime_tools() -> Iterator[None]:
    """Keep ONNX Runtime's quantizer from printing to stdout and advising on the root logger.

    Both are restored on exit; what was printed goes to this module's debug log.
    """
    root = logging.getLogger()
    advice_filter = _DropPreprocessAdvice()
    root.addFilter(advice_filter)
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            yield
    finally:
        root.removeFilter(advice_filter)
        if printed.getvalue():
            log.debug("onnxruntime.quantization printed:\n%s", printed.getvalue())


def _preprocessed(model_bytes: bytes, tmp: Path) -> object:
    """ONNX Runtime's recommended ``quant_pre_process`` (shape inference, graph optimisation).

    It fails on some real models ("Incomplete symbolic shape inference"); then
    quantization proceeds on the model as exported, and the failure is logged.
    """
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = tmp / "preprocessed.onnx"
    try:
        quant_pre_process(onnx.load_from_string(model_bytes), out)
        return onnx.load(str(out))
    except Exception as exc:  # noqa: BLE001 - any failure means: quantize the raw export
        log.info("quant_pre_process failed (%s); quantizing the model as exported", exc)
        return onnx.load_from_string(model_bytes)


def resolve_reduce_range(runtime: Int8Dynamic | Int8Static) -> bool:
    """The recipe's ``reduce_range``, or this machine's safe choice when it is ``None``."""
    return default_reduce_range() if runtime.reduce_range is None else runtime.reduce_range


def quantize_dynamic_onnx(onnx_bytes: bytes, runtime: Int8Dynamic) -> bytes:
    """Dynamic int8: signed int8 weights (the fast x86 path), activations quantized at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp, _quiet_onnxruntime_tools():
        out = Path(tmp) / "int8.onnx"
        quantize_dynamic(
            _preprocessed(onnx_bytes, Path(tmp)),
            out,
            op_types_to_quantize=list(runtime.op_types),
            per_channel=runtime.per_channel,
            reduce_range=resolve_reduce_range(runtime),
            weight_type=QuantType.QInt8,
        )
        return out.read_bytes()


class _BatchReader:
    """``CalibrationDataReader`` over pre-made feed dicts."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]) -> None:
        self._iter = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)

    def rewind(self) -> None:  # pragma: no cover - only some calibrators call it
        raise NotImplementedError


def quantize_static_onnx(
    onnx_bytes: bytes, runtime: Int8Static, feeds: Sequence[dict[str, np.ndarray]]
) -> bytes:
    """Static int8 in QDQ format with activation ranges calibrated on ``feeds``."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if not feeds:
        raise CalibrationError(
            "Int8Static needs calibration data and none was given; pass calibration_data= "
            "(a few hundred representative inputs), or use runtime=Int8Dynamic()."
        )
    calibration = runtime.calibration
    extra: dict[str, object] = {}
    if isinstance(calibration, MinMax):
        method = CalibrationMethod.MinMax
    elif isinstance(calibration, Percentile):
        method = CalibrationMethod.Percentile
        extra["CalibPercentile"] = float(calibration.percentile)
    elif isinstance(calibration, Entropy):
        method = CalibrationMethod.Entropy
    else:  # pragma: no cover - Int8Static validates its calibration
        raise CalibrationError(f"unknown calibration {calibration!r}")
    act = QuantType.QInt8 if runtime.activations == "int8" else QuantType.QUInt8
    with tempfile.TemporaryDirectory() as tmp, _quiet_onnxruntime_tools():
        out = Path(tmp) / "int8.onnx"
        # The calibrator writes an augmented copy of the model to a temp dir of its own choosing.
        quantize_static(
            _preprocessed(onnx_bytes, Path(tmp)),
            out,
            _BatchReader(feeds),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(runtime.op_types) if runtime.op_types else None,
            per_channel=runtime.per_channel,
            reduce_range=resolve_reduce_range(runtime),
            activation_type=act,
            weight_type=QuantType.QInt8,
            calibrate_method=method,
            extra_options=extra,
        )
        return out.read_bytes()


def convert_float16_onnx(onnx_bytes: bytes) -> bytes:
    """Float16 weights and activations; inputs and outputs stay float32 for the caller."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load_from_string(onnx_bytes), keep_io_types=True)
    return model.SerializeToString()
