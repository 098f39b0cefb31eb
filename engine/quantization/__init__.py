"""Quantization in PyTorch and its encodings: linear (ONNX semantics), fixed point, k-means, weight
sharing, Huffman coding and bit packing, simulated quantized models and quantization-aware training.

The tensor-level primitives are public here and load lazily (``import
squeezelab.engine.quantization.qat`` does not pull in k-means)::

    >>> from squeezelab.engine.quantization import choose_qparams, quantize, dequantize
"""

from __future__ import annotations

from squeezelab._lazy import lazy_attributes

PRIMITIVES = {
    "QParams": "squeezelab.engine.quantization.linear",
    "qrange": "squeezelab.engine.quantization.linear",
    "choose_qparams": "squeezelab.engine.quantization.linear",
    "quantize": "squeezelab.engine.quantization.linear",
    "dequantize": "squeezelab.engine.quantization.linear",
    "fake_quantize": "squeezelab.engine.quantization.linear",
    "choose_frac_bits": "squeezelab.engine.quantization.fixed_point",
    "fixed_point_qparams": "squeezelab.engine.quantization.fixed_point",
    "kmeans_quantize": "squeezelab.engine.quantization.kmeans",
    "pack_codes": "squeezelab.engine.quantization.packing",
    "unpack_codes": "squeezelab.engine.quantization.packing",
}

__getattr__, __dir__ = lazy_attributes("squeezelab.engine.quantization", globals(), PRIMITIVES)

__all__ = list(PRIMITIVES)
