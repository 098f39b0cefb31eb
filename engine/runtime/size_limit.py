"""ONNX's 2 GB limit: past it, ``compress`` moves the model between its steps as a file with external data.

One ``ModelProto`` cannot be serialised past 2 GB (protobuf's signed 32-bit sizes); past it ONNX
keeps weights as external data. A model whose tensors are past ``current_file_threshold()`` (1 GiB, at most
the limit) is exported (or read) as an ``OnnxFile`` (``engine.runtime.external_data``): the ``.onnx`` file, its weights beside it
in a working folder. A step that still holds the model as one protobuf (static int8's calibration)
raises ``ModelTooLargeError`` (``check_fits_protobuf``) naming the step, the size and the limit, before
any slow work. ``protobuf_limit`` lowers the limit inside a block, so tests take that path with small models.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from squeezelab.engine.core.errors import ModelTooLargeError

__all__ = ["PROTOBUF_LIMIT_BYTES", "protobuf_limit", "check_fits_protobuf", "current_limit", "FILE_THRESHOLD_BYTES",
           "file_threshold", "current_file_threshold"]

# ONNX's limit: one ModelProto cannot be serialised past 2 GB (protobuf's signed 32-bit sizes).
PROTOBUF_LIMIT_BYTES = 2**31 - 1
_LIMITS: list[int] = []  # set by protobuf_limit (tests force the large-model path on small models)


@contextlib.contextmanager
def _pushed(stack: list[int], limit_bytes: int) -> Iterator[None]:
    """``limit_bytes`` on top of ``stack`` within the block (blocks nest; the innermost wins)."""
    stack.append(int(limit_bytes))
    try:
        yield
    finally:
        stack.pop()


def protobuf_limit(limit_bytes: int) -> contextlib.AbstractContextManager[None]:
    """Within the block, models past ``limit_bytes`` count as past ONNX's 2 GB limit."""
    return _pushed(_LIMITS, limit_bytes)


def current_limit() -> int:
    """The limit in force: ``protobuf_limit``'s inside its block, else ONNX's."""
    return _LIMITS[-1] if _LIMITS else PROTOBUF_LIMIT_BYTES


# Past this, compress moves the model between its steps as a file (a path, its weights beside it) even where one
# protobuf could hold it: the serialised bytes would be one more whole-model copy held from the export to the end.
FILE_THRESHOLD_BYTES = 2**30  # 1 GiB: BERT-large (1.34 GB fp32) goes as a file, BERT-base (0.44 GB) as bytes
_FILE_THRESHOLDS: list[int] = []  # set by file_threshold (tests take the file path with small models)


def file_threshold(limit_bytes: int) -> contextlib.AbstractContextManager[None]:
    """Within the block, models past ``limit_bytes`` move between compress's steps as files."""
    return _pushed(_FILE_THRESHOLDS, limit_bytes)


def current_file_threshold() -> int:
    """Past this many bytes of weights a model is kept as a file: ``file_threshold``'s, else 1 GiB, and never more
    than the protobuf limit in force."""
    return min(_FILE_THRESHOLDS[-1] if _FILE_THRESHOLDS else FILE_THRESHOLD_BYTES, current_limit())


def check_fits_protobuf(size_bytes: int, step: str, fix: str) -> None:
    """``ModelTooLargeError`` naming ``step`` and the size when ``size_bytes`` is past the limit."""
    limit = current_limit()
    if size_bytes > limit:
        raise ModelTooLargeError(
            f"{step}: the model is {size_bytes / 1e9:.2f} GB, past the {limit / 1e9:.2f} GB one ONNX protobuf can "
            f"hold, and squeezelab's {step} keeps the model as one protobuf. {fix}",
            step=step, size_bytes=size_bytes, limit_bytes=limit,
        )
