"""Quantization primitives: linear (ONNX semantics), fixed point, k-means, bit packing."""

from squeezelab.engine.quant.fixed_point import choose_frac_bits, fixed_point_qparams
from squeezelab.engine.quant.kmeans import kmeans_quantize
from squeezelab.engine.quant.linear import (
    QParams,
    choose_qparams,
    dequantize,
    fake_quantize,
    qrange,
    quantize,
)
from squeezelab.engine.quant.packing import pack_codes, unpack_codes

__all__ = [
    "QParams",
    "qrange",
    "choose_qparams",
    "quantize",
    "dequantize",
    "fake_quantize",
    "choose_frac_bits",
    "fixed_point_qparams",
    "kmeans_quantize",
    "pack_codes",
    "unpack_codes",
]
