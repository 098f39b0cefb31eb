"""Pack integer codes into exactly ``bits`` bits each, and back.

Sizes of sub-8-bit results are the byte counts of these packed arrays, never a
formula: ``pack_codes(codes, 3)`` of 1,000 codes is 375 bytes because that is
what it writes.

>>> import numpy as np
>>> codes = np.array([5, 0, 7, 3, 1], dtype=np.uint16)
>>> packed = pack_codes(codes, bits=3)
>>> packed.nbytes, unpack_codes(packed, bits=3, count=5).tolist()
(2, [5, 0, 7, 3, 1])
"""

from __future__ import annotations

import numpy as np

__all__ = ["pack_codes", "unpack_codes"]

_CHUNK = 1 << 16


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack non-negative integer ``codes`` (< 2**bits) into a little-endian bit stream (uint8)."""
    codes = np.asarray(codes).reshape(-1)
    if not 1 <= bits <= 16:
        raise ValueError(f"bits={bits!r} must be in 1..16")
    if codes.size and (codes.min() < 0 or codes.max() >= (1 << bits)):
        raise ValueError(f"codes must lie in [0, {1 << bits}) to pack into {bits} bits")
    # (N, bits) matrix of bits, least significant first, flattened row by row. Done in chunks
    # of 2^16 codes (a multiple of 8, so every chunk ends on a byte boundary) to bound memory.
    shifts = np.arange(bits, dtype=np.uint16)
    codes = codes.astype(np.uint16)
    chunks = [
        np.packbits(((codes[i : i + _CHUNK, None] >> shifts) & 1).astype(np.uint8).reshape(-1), bitorder="little")
        for i in range(0, codes.size, _CHUNK)
    ]
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.uint8)


def unpack_codes(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of ``pack_codes``: the first ``count`` codes as uint16 (uint8 when bits <= 8)."""
    flat = np.unpackbits(np.asarray(packed, dtype=np.uint8), bitorder="little", count=count * bits)
    bit_matrix = flat.reshape(count, bits)  # one byte per bit; no wider temporaries
    values = np.zeros(count, dtype=np.uint16)
    for b in range(bits):
        values |= bit_matrix[:, b].astype(np.uint16) << b
    return values.astype(np.uint8) if bits <= 8 else values
