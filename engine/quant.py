"""The old home of the quantization primitives: they live in ``squeezelab.engine.quantization`` (same
names). ``from squeezelab.engine.quant import quantize`` still works for one release, with a
``DeprecationWarning`` naming the new place."""

from __future__ import annotations

import importlib
import warnings
from typing import Any

from squeezelab.engine.quantization import PRIMITIVES


def __getattr__(name: str) -> Any:
    if name not in PRIMITIVES:
        raise AttributeError(f"module 'squeezelab.engine.quant' has no attribute {name!r}")
    warnings.warn(
        f"squeezelab.engine.quant.{name} moved: use squeezelab.engine.quantization.{name}; the old module goes in "
        "the next release.", DeprecationWarning, stacklevel=2,
    )
    return getattr(importlib.import_module(PRIMITIVES[name]), name)


def __dir__() -> list[str]:
    return sorted(PRIMITIVES)


__all__ = list(PRIMITIVES)
