"""Running ONNX Runtime's quantization tools safely, and the int8 choices every conversion shares.

ONNX Runtime's quantizers print to stdout, advise on the root logger, and leave files in the working
directory when their shape inference fails; ``quiet_onnxruntime_tools`` and ``preprocessed`` keep all
of that away from the user. ``resolve_reduce_range`` is this machine's int8 weight range, with its
reason (``reduce_range_why``); ``BatchReader`` feeds calibration batches.
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from squeezelab.engine.runtime.external_data import is_file_model, load_proto
from squeezelab.engine.core.cpu import default_reduce_range
from squeezelab.engine.core.runtimes import Int8Dynamic, Int8Static

__all__ = [
    "quiet_onnxruntime_tools", "preprocessed", "preprocessed_file", "resolve_reduce_range", "reduce_range_why", "BatchReader",
]

log = logging.getLogger(__name__)


class _DropPreprocessAdvice(logging.Filter):
    """Moves what ONNX Runtime's quantizer says on the root logger to this module's debug log.

    Its "consider pre-processing" advice (followed or tried) and its notes on LayerNorm axes and
    non-constant biases of transformer graphs are about choices squeezelab made on purpose.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if "pre-processing" in record.getMessage() or "quantization" in record.pathname.replace("\\", "/"):
            log.debug("onnxruntime.quantization: %s", record.getMessage())
            return False
        return True


# Redirecting stdout and filtering the root logger are process-wide: one ONNX Runtime tool at a time.
# Re-entrant: a tool called inside another's quiet block (the optimizer inside a quantization) nests.
_TOOLS_LOCK = threading.RLock()


@contextlib.contextmanager
def quiet_onnxruntime_tools() -> Iterator[None]:
    """Keep ONNX Runtime's Python tools (quantizer, shape inference, transformer optimizer, float16
    converter) from printing to stdout and advising on the root logger.

    They ``print()`` what they meant as log lines ("failed in shape inference <class 'AssertionError'>"
    from the optimizer's symbolic shape inference): a user's stdout is theirs (a CLI's JSON goes there).
    Both are restored on exit; what was printed goes to this module's debug log. Every call of those
    tools in squeezelab runs inside this block. Holds a lock meanwhile, so concurrent threads never
    interleave the redirection.
    """
    with _TOOLS_LOCK, _quieted():
        yield


@contextlib.contextmanager
def _quieted() -> Iterator[None]:
    root = logging.getLogger()
    advice_filter = _DropPreprocessAdvice()
    root.addFilter(advice_filter)
    # Symbolic shape inference warns about each broadcast it cannot prove on transformer graphs
    # (e.g. "Min(512, sequence)"); the graph is then quantized as exported, which is fine.
    shape_log = logging.getLogger("onnxruntime.tools.symbolic_shape_infer")
    shape_level = shape_log.level
    shape_log.setLevel(logging.ERROR)
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            yield
    finally:
        root.removeFilter(advice_filter)
        shape_log.setLevel(shape_level)
        if printed.getvalue():
            log.debug("onnxruntime.quantization printed:\n%s", printed.getvalue())


def preprocessed(model_bytes: bytes, tmp: Path) -> object:
    """ONNX Runtime's recommended ``quant_pre_process`` (shape inference, graph optimisation).

    It fails on some real models ("Incomplete symbolic shape inference"); then
    quantization proceeds on the model as exported, and the failure is logged.
    """
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = tmp / "preprocessed.onnx"
    leftover = Path(_SHAPE_INFERENCE_LEFTOVER)
    had_leftover, started = leftover.exists(), time.time()
    try:
        quant_pre_process(onnx.load_from_string(model_bytes), out)
        return onnx.load(str(out))
    except Exception as exc:  # noqa: BLE001 - any failure means: quantize the raw export
        log.info("quant_pre_process failed (%s); quantizing the model as exported", exc)
        if not had_leftover:
            _remove_shape_inference_leftover(leftover, started)
        return onnx.load_from_string(model_bytes)


def preprocessed_file(model_bytes: bytes, tmp: Path) -> Path:
    """``preprocessed`` written to a file in ``tmp`` (the model as given when pre-processing fails): the
    file the quantizer reads, so no second copy of the model is held in memory meanwhile."""
    from onnxruntime.quantization.shape_inference import quant_pre_process  # lazily: heavy

    out, raw = tmp / "preprocessed.onnx", tmp / "model.onnx"
    leftover = Path(_SHAPE_INFERENCE_LEFTOVER)
    had_leftover, started = leftover.exists(), time.time()
    large = is_file_model(model_bytes)  # past 2 GB: read with its weights, written with them beside it
    try:
        quant_pre_process(load_proto(model_bytes), out, save_as_external_data=large, all_tensors_to_one_file=large)
        return out
    except Exception as exc:  # noqa: BLE001 - any failure means: quantize the raw export
        log.info("quant_pre_process failed (%s); quantizing the model as exported", exc)
        if not had_leftover:
            _remove_shape_inference_leftover(leftover, started)
        if large:
            return model_bytes.path
        raw.write_bytes(model_bytes)
        return raw


# ONNX Runtime's symbolic shape inference saves the half-inferred model under this name in the
# *working directory* when it fails (with its weights in a uuid-named file beside it): the user's folder.
_SHAPE_INFERENCE_LEFTOVER = "sym_shape_infer_temp.onnx"


def _remove_shape_inference_leftover(path: Path, since: float) -> None:
    """Delete the file a failed shape inference just wrote, and the external-data files it names."""
    import onnx

    if not path.is_file() or path.stat().st_mtime < since - 1:
        return  # not ours
    try:
        proto = onnx.load(str(path), load_external_data=False)
        locations = {e.value for t in proto.graph.initializer for e in t.external_data if e.key == "location"}
    except Exception:  # noqa: BLE001 - unreadable: remove only the file itself
        locations = set()
    for location in locations:
        data = path.parent / location
        if data.is_file() and data.stat().st_mtime >= since - 1:
            data.unlink()
    path.unlink()


def resolve_reduce_range(runtime: Int8Dynamic | Int8Static) -> bool:
    """The recipe's ``reduce_range``, or this machine's safe choice when it is ``None``."""
    return default_reduce_range() if runtime.reduce_range is None else runtime.reduce_range


def reduce_range_why(runtime: Int8Dynamic | Int8Static) -> str:
    if runtime.reduce_range is not None:
        return "set in the recipe"
    if resolve_reduce_range(runtime):
        return "this CPU has no VNNI: 7-bit weights keep its int16 accumulation from saturating"
    return "this CPU accumulates int8 products exactly (VNNI or ARM): full 8-bit weights"


class BatchReader:
    """``CalibrationDataReader`` over pre-made feed dicts."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]) -> None:
        self._iter = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)
