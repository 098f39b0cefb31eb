"""What one export's repeated static quantizations can share while a search runs.

An int8 search quantizes the same fp32 export dozens of times, each time with other layers kept
float (``nodes_to_exclude``). Two steps of ONNX Runtime's ``quantize_static`` do not depend on
which nodes are excluded, and they are most of its time on a CNN:

- ``quant_pre_process`` (shape inference and graph optimisation of the export);
- calibration: the calibrator runs the fp32 model on the calibration batches and records the
  ranges of the tensors of the op types to quantize. ONNX Runtime (>= 1.22) can keep those
  ranges in a file, ``calibration_cache_path``; the ranges depend on the graph, the batches,
  the method and its options and the op types, which make the file's key.

Inside ``remembered_quantization()`` both are computed once per key and reused; outside it
nothing is remembered, so a single ``compress`` behaves as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["remembered_quantization", "remembered_preprocess", "calibration_cache_path", "calibration_cache_supported"]


@dataclass
class _Memo:
    folder: Path
    preprocessed: dict[bytes, bytes] = field(default_factory=dict)


_MEMOS: list[_Memo] = []  # set while a search runs


@contextlib.contextmanager
def remembered_quantization() -> Iterator[None]:
    """Within the block, each export is pre-processed once and calibrated once per set of batches."""
    with tempfile.TemporaryDirectory(prefix="squeezelab-calibration-") as folder:
        _MEMOS.append(_Memo(Path(folder)))
        try:
            yield
        finally:
            _MEMOS.pop()


def calibration_cache_supported() -> bool:
    """Whether this ONNX Runtime's ``quantize_static`` takes ``calibration_cache_path`` (added in 1.22)."""
    from onnxruntime.quantization import quantize_static

    return "calibration_cache_path" in inspect.signature(quantize_static).parameters


def _digest(onnx_bytes: bytes, feeds: Sequence[dict[str, np.ndarray]], parts: Sequence[Any]) -> str:
    h = hashlib.sha256(onnx_bytes)
    for batch in feeds:
        for name in sorted(batch):
            array = np.ascontiguousarray(batch[name])
            h.update(f"{name}:{array.dtype}:{array.shape}".encode())
            h.update(array.tobytes())
    h.update(repr(list(parts)).encode())
    return h.hexdigest()


def calibration_cache_path(onnx_bytes: bytes, feeds: Sequence[dict[str, np.ndarray]], parts: Sequence[Any]) -> Path | None:
    """The file the ranges of ``onnx_bytes`` calibrated on ``feeds`` with ``parts`` (method, options, op types)
    are kept in while ``remembered_quantization()`` is active; None outside it or where ONNX Runtime has no cache."""
    if not _MEMOS or not calibration_cache_supported():
        return None
    return _MEMOS[-1].folder / f"{_digest(onnx_bytes, feeds, parts)}.json"


def remembered_preprocess(onnx_bytes: bytes, preprocess: Callable[[bytes], Any]) -> Any:
    """``preprocess(onnx_bytes)`` (an ``onnx.ModelProto``), computed once per export inside ``remembered_quantization()``."""
    import onnx

    if not _MEMOS:
        return preprocess(onnx_bytes)
    memo = _MEMOS[-1].preprocessed
    key = hashlib.sha256(onnx_bytes).digest()
    if key not in memo:
        memo[key] = preprocess(onnx_bytes).SerializeToString()
    return onnx.load_from_string(memo[key])
