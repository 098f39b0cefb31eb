"""Fixed-point Qm.n quantization, static and dynamic (per-layer fractional length).

A signed Qm.n number with ``total_bits = 1 + m + n`` is a linear code with
scale ``2^-n``, zero point 0 and the full two's-complement range, so it reuses
``QParams`` and the ONNX-exact ``quantize``/``dequantize``.

Dynamic fixed point (Ristretto, Gysel et al. 2016) chooses ``n`` per layer as
the largest fractional length whose range still covers the layer's largest
magnitude: ``n = total_bits - 1 - ceil(log2(max|x|))``.

>>> import torch
>>> choose_frac_bits(torch.tensor([0.3, -1.7]), total_bits=8)
6
>>> fixed_point_qparams(total_bits=8, frac_bits=6).scale.item()
0.015625
"""

from __future__ import annotations

import math

import torch

from squeezelab.engine.quantization.linear import QParams, qrange

__all__ = ["choose_frac_bits", "fixed_point_qparams"]


def choose_frac_bits(x: torch.Tensor, *, total_bits: int) -> int:
    """Fractional length for dynamic fixed point: the finest step that does not clip ``max|x|``."""
    absmax = float(x.detach().abs().max()) if x.numel() else 0.0
    if absmax == 0.0:
        return total_bits - 1
    # Integer bits needed to hold absmax (may be negative for small weights: more fraction bits).
    int_bits = math.ceil(math.log2(absmax))
    frac = total_bits - 1 - int_bits
    # Codes reach 2^(total-1) - 1, not 2^(total-1): step down one if absmax would still clip.
    _, qmax = qrange(total_bits, signed=True)
    if absmax > qmax * 2.0**-frac:
        frac -= 1
    return frac


def fixed_point_qparams(*, total_bits: int, frac_bits: int) -> QParams:
    """``QParams`` of a signed Q(total_bits-1-frac_bits).frac_bits number."""
    qmin, qmax = qrange(total_bits, signed=True)
    return QParams(
        scale=torch.tensor(2.0**-frac_bits, dtype=torch.float32),
        zero_point=torch.tensor(0, dtype=torch.int32),
        qmin=qmin,
        qmax=qmax,
    )
