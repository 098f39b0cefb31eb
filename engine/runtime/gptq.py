"""GPTQ: block-quantized weights that minimise the layer's output error on calibration data.

Frantar et al. 2022 ("GPTQ: Accurate Post-Training Quantization for Generative Pre-trained Transformers").
For ``Y = X @ W`` with ``W`` (K, N), round to nearest minimises each weight's own error; GPTQ minimises
``||X @ W - X @ Q||^2 = trace((W - Q)^T H (W - Q))`` with ``H = X^T X``, quantizing one input row ``k`` of
``W`` at a time and spreading its rounding error over the rows not yet quantized (Optimal Brain Surgeon's
update, with the Cholesky factor of ``H^-1``). Updates inside a batch of rows are immediate, to later rows
lazy (one matrix product per batch), as in the paper.

The result is in ``MatMulNBits``' layout: one scale and zero point per (output column, block of
``block_size`` consecutive k). With ``act_order`` rows are quantized in order of decreasing ``H[k, k]``
(most-used inputs first, while most rows are still free to absorb their error), but the blocks stay the
original consecutive k, as the kernel needs ("static groups"): a block's scale is fixed when its first row
comes up, from the block's current values (every earlier update applied), and serves all its rows.

Why not ONNX Runtime's bundled GPTQ (``GPTQWeightOnlyQuantConfig``, 1.32's ``neural_compressor/weight_only.py``)?
It spreads each row's error with ``Hinv1[i:, i]`` and ``Hinv[i2:, i1:i2]``: entries *below* the diagonal of
the upper Cholesky factor, all zero (the paper uses row ``i``, ``Hinv1[i, i:]``), so no error reaches any
other row and the result is round to nearest: on MiniLM, block 32, cosine 0.9732 against its RTN's 0.9733.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from squeezelab.engine.runtime.nbits import BlockQuantized, block_params, quantize_with

__all__ = ["GptqSettings", "gptq_blocks"]


@dataclass(frozen=True)
class GptqSettings:
    """GPTQ's own knobs (the paper's defaults): dampening as a fraction of the mean of ``diag(H)``,
    rows per lazy batch, and whether rows go in order of decreasing ``diag(H)``."""

    percdamp: float = 0.01
    lazy_rows: int = 128
    act_order: bool = True


def _inverse_factor(h: np.ndarray, percdamp: float) -> torch.Tensor:
    """Upper Cholesky factor of ``(H + damp I)^-1`` (float64), dampening raised until ``H`` factors."""
    h = torch.from_numpy(h).to(torch.float64)
    mean = float(torch.diagonal(h).mean()) or 1.0
    eye = torch.eye(h.shape[0], dtype=torch.float64)
    for damp in (percdamp, percdamp * 10, percdamp * 100, 1.0):
        factor, info = torch.linalg.cholesky_ex(h + damp * mean * eye)
        if int(info) == 0:
            inverse = torch.cholesky_inverse(factor)
            upper, info = torch.linalg.cholesky_ex(inverse, upper=True)
            if int(info) == 0:
                return upper
    raise ValueError("the calibration moments do not factor even with full dampening")  # not reached for X^T X


# torch's thread count is process-wide: one GPTQ at a time changes it, so threads cannot restore each other's.
_THREADS_LOCK = threading.Lock()


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    """The row loop is thousands of small updates: on a busy 2-core machine two threads made each ~40x
    slower (8 ms against 0.2 ms). The caller's thread count is restored."""
    with _THREADS_LOCK:
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)


class _Blocks:
    """Scale and zero point of each block, fixed when the block's first row is quantized."""

    def __init__(self, n: int, k: int, bits: int, block_size: int, symmetric: bool) -> None:
        self.k_blocks = -(-k // block_size)
        self.scales = np.zeros((n, self.k_blocks), np.float32)
        self.zeros = np.zeros((n, self.k_blocks), np.uint8)
        self.ready = np.zeros(self.k_blocks, bool)
        self.bits, self.block_size, self.symmetric = bits, block_size, symmetric

    def fix(self, block: int, values: np.ndarray) -> None:
        """``values`` (N, rows of the block): the block's current weights; zero rows pad a short block."""
        padded = np.zeros((values.shape[0], self.block_size), np.float32)
        padded[:, : values.shape[1]] = values
        self.scales[:, block], self.zeros[:, block] = block_params(padded, self.bits, self.symmetric)
        self.ready[block] = True


def gptq_blocks(
    weight: np.ndarray, hessian: np.ndarray, *, bits: int, block_size: int, symmetric: bool,
    settings: GptqSettings = GptqSettings(),
) -> BlockQuantized:
    """GPTQ codes, scales and zero points for ``weight`` (K, N) given ``hessian`` = X^T X (K, K).

    Scales and zero points use the same formulas as round to nearest (``nbits.block_params``), on the
    updated weights; with ``H`` the identity the result is round to nearest.
    """
    k, n = weight.shape
    h = np.array(hessian, np.float64)
    dead = np.diag(h) == 0  # inputs that were always 0: any weight serves; H needs a 1 to factor
    h[dead, dead] = 1.0
    order = np.argsort(-np.diag(h), kind="stable") if settings.act_order else np.arange(k)
    position = np.argsort(order)  # row k's place in the order
    permuted = np.where(dead[:, None], np.float32(0), np.asarray(weight, np.float32))[order]
    w = torch.from_numpy(np.ascontiguousarray(permuted))  # (K, N): row-major, so a row's update is contiguous
    blocks = _Blocks(n, k, bits, block_size, symmetric)
    codes = np.zeros((n, k), np.uint8)
    with _one_torch_thread():
        u = _inverse_factor(h[np.ix_(order, order)], settings.percdamp).to(torch.float32)  # (K, K), permuted
        for start in range(0, k, settings.lazy_rows):
            stop = min(start + settings.lazy_rows, k)
            errors = _quantize_batch(w, u, start, stop, order, position, blocks, codes)
            w[stop:] -= u[start:stop, stop:].T @ errors  # the batch's error, spread lazily over later rows
    return BlockQuantized(codes, blocks.scales, blocks.zeros, bits, block_size, symmetric)


def _quantize_batch(
    w: torch.Tensor, u: torch.Tensor, start: int, stop: int, order: np.ndarray, position: np.ndarray,
    blocks: _Blocks, codes: np.ndarray,
) -> torch.Tensor:
    """Quantize permuted rows ``start:stop`` of ``w`` (updated in place); returns their scaled errors (rows, N)."""
    batch = w[start:stop]  # a view: in-batch updates land in w
    errors = torch.zeros_like(batch)
    for i in range(stop - start):
        row = order[start + i]
        block = row // blocks.block_size
        if not blocks.ready[block]:
            blocks.fix(block, _current_block(w, u, errors, start, i, block, blocks.block_size, position))
        scale, zero = blocks.scales[:, block], blocks.zeros[:, block]
        q = quantize_with(batch[i].numpy()[:, None], scale, zero, blocks.bits)[:, 0]
        codes[:, row] = q
        dequantized = torch.from_numpy((q.astype(np.float32) - zero.astype(np.float32)) * scale)
        error = (batch[i] - dequantized) / u[start + i, start + i]
        batch[i:] -= u[start + i, start + i : stop][:, None] * error[None, :]
        errors[i] = error
    return errors


def _current_block(
    w: torch.Tensor, u: torch.Tensor, errors: torch.Tensor, start: int, done: int, block: int, block_size: int,
    position: np.ndarray,
) -> np.ndarray:
    """The block's weights (N, rows) with every update so far, including the lazy ones still pending.

    A block's rows may lie past the current batch (with ``act_order``): those have not yet received
    this batch's ``done`` errors, which are added here without changing ``w``.
    """
    rows = np.arange(block * block_size, min((block + 1) * block_size, len(position)))
    places = torch.from_numpy(position[rows])
    values = w[places].clone()  # (rows, N)
    later = places >= start + errors.shape[0]
    if done and bool(later.any()):
        values[later] -= u[start : start + done][:, places[later]].T @ errors[:done]
    return values.T.numpy()
