"""Linear (uniform) quantization with ONNX ``QuantizeLinear`` semantics.

``quantize`` computes ``saturate(round_half_to_even(x / scale) + zero_point)``
exactly as ONNX ``QuantizeLinear`` does; ``dequantize`` is
``(q - zero_point) * scale`` as in ``DequantizeLinear``. ``fake_quantize`` is
their composition with a straight-through estimator for training.

Ranges follow ONNX Runtime's choices for weights: symmetric quantization is
signed with zero point 0 and a narrow range ``[-(2^(b-1)-1), 2^(b-1)-1]``
(so +x and -x get codes of equal magnitude); affine quantization is unsigned
``[0, 2^b-1]`` with a zero point, and the range always contains 0 so that
zero (padding, pruned weights) is exact.

Examples:
    >>> import torch
    >>> x = torch.tensor([-127.0, 2.5, 3.5, 0.0, 127.0])
    >>> qp = choose_qparams(x, bits=8, symmetric=True)  # scale 1.0: halves round to even
    >>> quantize(x, qp).tolist()
    [-127, 2, 4, 0, 127]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["QParams", "qrange", "choose_qparams", "quantize", "dequantize", "fake_quantize"]


def qrange(bits: int, *, signed: bool, narrow: bool = False) -> tuple[int, int]:
    """Integer code range of a ``bits``-wide code.

    >>> qrange(8, signed=True, narrow=True), qrange(4, signed=False)
    ((-127, 127), (0, 15))
    """
    if signed:
        qmax = (1 << (bits - 1)) - 1
        return (-qmax if narrow else -qmax - 1), qmax
    return 0, (1 << bits) - 1


@dataclass(frozen=True)
class QParams:
    """Scale and zero point of a linear quantizer.

    ``scale``/``zero_point`` are 0-d tensors (per tensor) or 1-d tensors of
    length C (per channel along ``axis``).
    """

    scale: torch.Tensor  # float32, () or (C,)
    zero_point: torch.Tensor  # int32, same shape as scale
    qmin: int
    qmax: int
    axis: int | None = None

    @property
    def bits(self) -> int:
        return int(self.qmax - self.qmin).bit_length()

    def broadcast(self, ndim: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale and zero point shaped to broadcast against an ``ndim`` tensor."""
        if self.axis is None:
            return self.scale, self.zero_point
        shape = [1] * ndim
        shape[self.axis % ndim] = -1
        return self.scale.reshape(shape), self.zero_point.reshape(shape)


def choose_qparams(
    x: torch.Tensor, *, bits: int, symmetric: bool, axis: int | None = None
) -> QParams:
    """Min/max quantization parameters covering ``x`` (per tensor, or per slice along ``axis``).

    A constant-zero tensor or channel gets scale 1, so quantizing it is exact.
    """
    x = x.detach().to(torch.float32)
    if axis is None:
        lo, hi = x.min(), x.max()
    else:
        axis = axis % x.ndim
        flat = x.movedim(axis, 0).reshape(x.shape[axis], -1)
        lo, hi = flat.min(dim=1).values, flat.max(dim=1).values
    # The range must contain 0 so that 0.0 is representable exactly.
    lo = torch.clamp(lo, max=0.0)
    hi = torch.clamp(hi, min=0.0)
    if symmetric:
        qmin, qmax = qrange(bits, signed=True, narrow=True)
        absmax = torch.maximum(-lo, hi)
        scale = absmax / qmax
        zero_point = torch.zeros_like(scale, dtype=torch.int32)
    else:
        qmin, qmax = qrange(bits, signed=False)
        scale = (hi - lo) / (qmax - qmin)
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        zero_point = torch.clamp(torch.round(qmin - lo / safe), qmin, qmax).to(torch.int32)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale)).to(torch.float32)
    return QParams(scale=scale, zero_point=zero_point, qmin=qmin, qmax=qmax, axis=axis)


def quantize(x: torch.Tensor, qp: QParams) -> torch.Tensor:
    """Integer codes (int32) of ``x``: ONNX ``QuantizeLinear`` rounding and saturation."""
    scale, zp = qp.broadcast(x.ndim)
    # torch.round rounds half to even, as ONNX requires; divide (not multiply by 1/scale) as ONNX does.
    q = torch.round(x.to(torch.float32) / scale) + zp
    return torch.clamp(q, qp.qmin, qp.qmax).to(torch.int32)


def dequantize(q: torch.Tensor, qp: QParams) -> torch.Tensor:
    """Float values of codes ``q``: ONNX ``DequantizeLinear``."""
    scale, zp = qp.broadcast(q.ndim)
    return (q.to(torch.int32) - zp).to(torch.float32) * scale


class _FakeQuantizeSTE(torch.autograd.Function):
    """Quantize-dequantize forward; straight-through gradient inside the range, zero outside.

    The gradient mask matches ``torch.fake_quantize_per_tensor_affine``: it
    passes where the unclamped code lies in ``[qmin, qmax]``.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor, qmin: int, qmax: int):  # noqa: ANN205
        q = torch.round(x / scale) + zp
        ctx.save_for_backward((q >= qmin) & (q <= qmax))
        return (torch.clamp(q, qmin, qmax) - zp) * scale

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ANN205
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None, None, None


def fake_quantize(x: torch.Tensor, qp: QParams) -> torch.Tensor:
    """``dequantize(quantize(x))`` differentiable with a straight-through estimator."""
    scale, zp = qp.broadcast(x.ndim)
    return _FakeQuantizeSTE.apply(x, scale.to(x.dtype), zp.to(x.dtype), qp.qmin, qp.qmax)
