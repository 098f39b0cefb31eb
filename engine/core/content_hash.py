"""Content hashes: a SHA-256 over values, arrays and tensors by their bytes, and squeezelab's version.

The one hash behind every key of the result cache (``fingerprints.py``, ``code_key.py``).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from squeezelab._version import __version__

__all__ = ["fingerprint", "feed", "FORMAT"]

FORMAT = 3  # 2: rows carry speedup_low / speedup_high. Bump when the entry layout changes: old cache entries then simply miss


def feed(h: Any, value: Any) -> None:
    """Hash ``value`` by content: arrays and tensors by dtype, shape and bytes; the rest as JSON."""
    import torch  # heavy: loaded on first use, so the pytest plugin and the CLI import this module cheaply

    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f"tensor{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())  # raw bytes: bfloat16 has no numpy dtype
        return
    if isinstance(value, np.ndarray):
        h.update(f"nd{value.dtype.str}{value.shape}".encode())
        h.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, (bytes, bytearray)):  # an ONNX model: its bytes, not their repr (90 MB for MiniLM)
        h.update(f"bytes{len(value)}".encode())
        h.update(value)
    elif isinstance(value, (list, tuple)):
        h.update(f"seq{len(value)}[".encode())
        for item in value:
            feed(h, item)
        h.update(b"]")
    elif isinstance(value, dict):
        h.update(b"{")
        for k in sorted(value, key=str):
            h.update(json.dumps(str(k)).encode())
            feed(h, value[k])
        h.update(b"}")
    else:
        h.update(json.dumps(value, sort_keys=True, default=repr).encode())


def fingerprint(*parts: Any) -> str:
    """A hex SHA-256 over ``parts`` (arrays by content) and the squeezelab version."""
    h = hashlib.sha256(f"squeezelab {__version__} cache {FORMAT}".encode())
    for part in parts:
        feed(h, part)
    return h.hexdigest()
