"""The old home of the quantization primitives, kept so ``from squeezelab.engine.quant import quantize``
still works: they live in ``squeezelab.engine.quantization`` (same names)."""

from __future__ import annotations

from squeezelab._lazy import lazy_attributes
from squeezelab.engine.quantization import PRIMITIVES

__getattr__, __dir__ = lazy_attributes("squeezelab.engine.quant", globals(), PRIMITIVES)

__all__ = list(PRIMITIVES)
