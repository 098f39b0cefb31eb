"""ONNX's 2 GB limit: past it, ``compress`` moves the model between its steps as a file with external data.

One ``ModelProto`` cannot be serialised past 2 GB (protobuf's signed 32-bit sizes); past it ONNX
keeps weights as external data. A model whose tensors are past ``current_limit()`` is exported (or
read) as an ``OnnxFile`` (``engine.runtime.external_data``): the ``.onnx`` file, its weights beside it
in a working folder. A step that still holds the model as one protobuf (static int8's calibration)
raises ``ModelTooLargeError`` (``check_fits_protobuf``) naming the step, the size and the limit, before
any slow work. ``protobuf_limit`` lowers the limit inside a block, so tests take that path with small models.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from squeezelab.engine.core.errors import ModelTooLargeError

__all__ = ["PROTOBUF_LIMIT_BYTES", "protobuf_limit", "check_fits_protobuf", "current_limit"]

# ONNX's limit: one ModelProto cannot be serialised past 2 GB (protobuf's signed 32-bit sizes).
PROTOBUF_LIMIT_BYTES = 2**31 - 1
_LIMITS: list[int] = []  # set by protobuf_limit (tests force the large-model path on small models)


@contextlib.contextmanager
def protobuf_limit(limit_bytes: int) -> Iterator[None]:
    """Within the block, models past ``limit_bytes`` count as past ONNX's 2 GB limit."""
    _LIMITS.append(int(limit_bytes))
    try:
        yield
    finally:
        _LIMITS.pop()


def current_limit() -> int:
    """The limit in force: ``protobuf_limit``'s inside its block, else ONNX's."""
    return _LIMITS[-1] if _LIMITS else PROTOBUF_LIMIT_BYTES


def check_fits_protobuf(size_bytes: int, step: str, fix: str) -> None:
    """``ModelTooLargeError`` naming ``step`` and the size when ``size_bytes`` is past the limit."""
    limit = current_limit()
    if size_bytes > limit:
        raise ModelTooLargeError(
            f"{step}: the model is {size_bytes / 1e9:.2f} GB, past the {limit / 1e9:.2f} GB one ONNX protobuf can "
            f"hold, and squeezelab's {step} keeps the model as one protobuf. {fix}",
            step=step, size_bytes=size_bytes, limit_bytes=limit,
        )
