"""More quantization tools beside ``compress`` and ``quantize``: calibration methods for ``Int8Static``,
quantization-aware training, weight sharing.

    >>> import squeezelab as sl
    >>> from squeezelab.quantization import Percentile
    >>> sl.Int8Static(calibration=Percentile(percentile=99.9)).calibration.percentile
    99.9

The tensor-level primitives (``choose_qparams``, ``quantize``, ``dequantize``, bit packing) live in
``squeezelab.engine.quantization``.
"""

from __future__ import annotations

from squeezelab._public import facade

__getattr__, __dir__, __all__ = facade("squeezelab.quantization", globals())
