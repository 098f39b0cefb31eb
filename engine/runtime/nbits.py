"""Block-quantized weights in ONNX Runtime's ``MatMulNBits`` layout: codes, scales, zero points, packing.

``MatMulNBits`` computes ``A @ W`` for a constant ``W`` (K, N) stored per output column ``n`` in blocks of
``block_size`` values along K, each block with a float32 scale and (asymmetric) an integer zero point:
``W[k, n] = (code[n, k] - zero_point[n, k // block_size]) * scale[n, k // block_size]``. This module
holds the part every method shares: round to nearest with ONNX Runtime's own formulas (so codes made
here are byte-identical to its C++ ``quantize_matmul_4bits`` / ``quantize_matmul_8bits``: the tests
compare them), the packing (two 4-bit codes a byte, low nibble first), and writing the node. A method
that chooses its codes differently (GPTQ, ``engine.runtime.gptq``) only supplies ``BlockQuantized``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["BlockQuantized", "block_params", "quantize_with", "rtn_blocks", "pack", "matmul_nbits_node"]


@dataclass(frozen=True)
class BlockQuantized:
    """One weight (K, N) block-quantized: ``codes`` (N, K) uint8, ``scales`` / ``zero_points`` (N, blocks)."""

    codes: np.ndarray  # (N, K) uint8, 0 .. 2**bits - 1
    scales: np.ndarray  # (N, k_blocks) float32
    zero_points: np.ndarray  # (N, k_blocks) uint8; 2**(bits-1) everywhere when symmetric
    bits: int
    block_size: int
    symmetric: bool

    @property
    def k(self) -> int:
        return int(self.codes.shape[1])

    def dequantized(self) -> np.ndarray:
        """The float weight (K, N) the kernel multiplies by: ``(code - zero_point) * scale`` per block."""
        per_k = np.repeat(np.arange(self.scales.shape[1]), self.block_size)[: self.k]  # block of each k
        centred = self.codes.astype(np.float32) - self.zero_points[:, per_k].astype(np.float32)
        return np.ascontiguousarray((centred * self.scales[:, per_k]).T)


def block_params(blocks: np.ndarray, bits: int, symmetric: bool) -> tuple[np.ndarray, np.ndarray]:
    """Scale and zero point of each block (rows of ``blocks``, shape (..., block)), as ONNX Runtime's MLAS computes them.

    Asymmetric: the range always holds 0 (``[min(lo, 0), max(hi, 0)]``), scale = range / (2**bits - 1), zero
    point = round(-lo / scale) clamped. Symmetric: scale = (the value of largest magnitude, signed) / -2**(bits-1),
    zero point 2**(bits-1), so the extreme value maps to code 0 exactly. float32 arithmetic throughout, as in C++.
    """
    qmax, mid = np.float32(2**bits - 1), 2 ** (bits - 1)
    lo, hi = blocks.min(axis=-1), blocks.max(axis=-1)
    if symmetric:
        extreme = np.where(np.abs(hi) > np.abs(lo), hi, lo)
        return (extreme / np.float32(-mid)).astype(np.float32), np.full(lo.shape, mid, np.uint8)
    lo, hi = np.minimum(lo, np.float32(0)), np.maximum(hi, np.float32(0))
    scale = ((hi - lo) / qmax).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        zero = np.where(scale != 0, np.float32(0) - lo / scale, lo).astype(np.float32)
    zero = np.clip(np.floor(zero + np.float32(0.5)), 0, qmax)  # C's roundf: halves away from zero (zero >= 0 here)
    return scale, zero.astype(np.uint8)


def quantize_with(values: np.ndarray, scale: np.ndarray, zero: np.ndarray, bits: int) -> np.ndarray:
    """Codes of ``values`` (..., m) under per-row ``scale``/``zero`` (...,): ``clamp(roundf(v / scale + zero))``.

    MLAS multiplies by the reciprocal (0 for a zero scale) and rounds halves away from zero.
    """
    with np.errstate(divide="ignore"):
        reciprocal = np.where(scale != 0, np.float32(1) / scale, np.float32(0)).astype(np.float32)
    shifted = (values * reciprocal[..., None]).astype(np.float32) + zero[..., None].astype(np.float32)
    rounded = np.sign(shifted) * np.floor(np.abs(shifted) + np.float32(0.5))
    return np.clip(rounded, 0, 2**bits - 1).astype(np.uint8)


def rtn_blocks(weight: np.ndarray, bits: int, block_size: int, symmetric: bool) -> BlockQuantized:
    """Round to nearest, per block: ONNX Runtime's default weight-only quantizer, in numpy."""
    k, n = weight.shape
    k_blocks = -(-k // block_size)
    padded = np.zeros((k_blocks * block_size, n), np.float32)
    padded[:k] = weight  # a short last block: the zeros change no range (asymmetric ranges hold 0 anyway)
    blocks = padded.T.reshape(n, k_blocks, block_size)
    scale, zero = block_params(blocks, bits, symmetric)
    codes = quantize_with(blocks, scale, zero, bits).reshape(n, -1)[:, :k]
    return BlockQuantized(np.ascontiguousarray(codes), scale, zero, bits, block_size, symmetric)


def pack(q: BlockQuantized) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``MatMulNBits``' inputs B (N, k_blocks, block_size * bits / 8), scales (N, k_blocks), zero points.

    4-bit codes go two a byte, the even k in the low nibble; the padding past K is 0, and a missing
    zero point's nibble holds the default 8, as ONNX Runtime writes them. Zero points are ``None`` when
    symmetric (the kernel then centres on 2**(bits-1)).
    """
    n, k = q.codes.shape
    k_blocks = q.scales.shape[1]
    codes = np.zeros((n, k_blocks * q.block_size), np.uint8)
    codes[:, :k] = q.codes
    zero = q.zero_points
    if q.bits == 4:
        codes = codes[:, 0::2] | (codes[:, 1::2] << 4)
        if k_blocks % 2:
            zero = np.concatenate([zero, np.full((n, 1), 8, np.uint8)], axis=1)
        zero = zero[:, 0::2] | (zero[:, 1::2] << 4)
    blob = codes.reshape(n, k_blocks, -1).astype(np.uint8)
    return blob, q.scales.astype(np.float32), None if q.symmetric else np.ascontiguousarray(zero, np.uint8)


def matmul_nbits_node(node: Any, weight_name: str, q: BlockQuantized, accuracy_level: int) -> tuple[Any, list[Any]]:
    """The ``MatMulNBits`` node replacing the ``MatMul`` ``node`` (same input A and output), and its initializers.

    Initializer names follow ONNX Runtime's quantizer (``<weight>_Q4``, ``_scales``, ``_zero_points``), so
    either tool's graph reads the same; ``accuracy_level`` 0 leaves the attribute out (float compute).
    """
    import onnx
    from onnx import numpy_helper

    blob, scales, zero = pack(q)
    inits = [numpy_helper.from_array(blob, f"{weight_name}_Q{q.bits}"), numpy_helper.from_array(scales, f"{weight_name}_scales")]
    if zero is not None:
        inits.append(numpy_helper.from_array(zero, f"{weight_name}_zero_points"))
    attrs: dict[str, Any] = {"K": q.k, "N": int(q.codes.shape[0]), "bits": q.bits, "block_size": q.block_size}
    if accuracy_level:
        attrs["accuracy_level"] = accuracy_level
    out = onnx.helper.make_node(
        "MatMulNBits", [node.input[0], *(i.name for i in inits)], [node.output[0]],
        name=f"{node.name}_Q{q.bits}", domain="com.microsoft", **attrs,
    )
    return out, inits
