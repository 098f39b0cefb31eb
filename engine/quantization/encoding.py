"""Encode one weight tensor under a quantization config, and decode it back.

An ``Encoded`` tensor is what a packed artifact stores: the codes packed to
exactly ``bits`` bits, plus what it takes to decode them (scales and zero
points, or a k-means codebook). Decoding gives the float tensor the simulated
model computes with, so the file and the simulation cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from squeezelab.engine.quantization import (
    choose_frac_bits,
    choose_qparams,
    dequantize,
    fixed_point_qparams,
    kmeans_quantize,
    pack_codes,
    quantize,
    unpack_codes,
)
from squeezelab.engine.core.errors import ConfigError
from squeezelab.engine.quantization.linear import QParams
from squeezelab.engine.core.quantizers import (
    FixedPoint,
    Float16,
    KMeansQuantization,
    LinearQuantization,
    PerChannel,
    QuantizationConfig,
)
from squeezelab.engine.quantization.huffman import huffman_decode, huffman_encode

__all__ = ["Encoded", "encode_tensor", "encode_float", "encode_huffman"]


@dataclass(frozen=True)
class Encoded:
    """A tensor as stored: ``arrays`` go into the file, ``meta`` into its JSON header."""

    kind: str  # "linear" | "kmeans" | "float16" | "float32" | "raw" (non-float buffers) | "huffman"
    shape: tuple[int, ...]
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]

    def decode(self) -> torch.Tensor:
        """The float32 tensor these codes stand for."""
        count = int(np.prod(self.shape)) if self.shape else 1
        if self.kind == "huffman":
            return _decode_huffman(self, count)
        if self.kind == "raw":
            return torch.from_numpy(self.arrays["values"].copy()).reshape(self.shape)
        if self.kind in ("float32", "float16"):
            return torch.from_numpy(self.arrays["values"].astype(np.float32)).reshape(self.shape)
        codes = unpack_codes(self.arrays["codes"], self.meta["bits"], count).astype(np.int64)
        if self.kind == "kmeans":
            values = self.arrays["codebook"][codes]
            return torch.from_numpy(values.astype(np.float32)).reshape(self.shape)
        qp = QParams(
            scale=torch.from_numpy(self.arrays["scale"]),
            zero_point=torch.from_numpy(self.arrays["zero_point"]),
            qmin=self.meta["qmin"],
            qmax=self.meta["qmax"],
            axis=self.meta["axis"],
        )
        # Codes were stored offset by qmin so they are non-negative.
        q = torch.from_numpy(codes + qp.qmin).to(torch.int32).reshape(self.shape)
        return dequantize(q, qp)


def encode_float(w: torch.Tensor, *, half: bool = False) -> Encoded:
    """A tensor stored as plain float32 (or float16)."""
    dtype = np.float16 if half else np.float32
    values = w.detach().to(torch.float32).contiguous().numpy().astype(dtype)
    return Encoded("float16" if half else "float32", tuple(w.shape), {"values": values}, {})


def _encode_linear(w: torch.Tensor, qp: QParams) -> Encoded:
    q = quantize(w, qp)
    bits = qp.bits
    codes = (q - qp.qmin).reshape(-1).numpy()
    return Encoded(
        "linear",
        tuple(w.shape),
        {
            "codes": pack_codes(codes, bits),
            "scale": qp.scale.numpy().astype(np.float32),
            "zero_point": qp.zero_point.numpy().astype(np.int32),
        },
        {"bits": bits, "qmin": qp.qmin, "qmax": qp.qmax, "axis": qp.axis},
    )


def _encode_linear_config(w: torch.Tensor, config: LinearQuantization) -> Encoded:
    axis = config.granularity.axis if isinstance(config.granularity, PerChannel) else None
    if axis is not None and w.ndim < 2:
        axis = None  # a 1-d tensor has one channel per element: per-tensor is the meaningful choice
    if axis is not None and not -w.ndim <= axis < w.ndim:
        raise ConfigError(
            f"PerChannel(axis={axis}) does not exist on a weight of shape {tuple(w.shape)}; "
            "use axis=0 (output channels) or PerTensor()."
        )
    qp = choose_qparams(w, bits=config.bits, symmetric=config.symmetric, axis=axis)
    return _encode_linear(w, qp)


def _encode_fixed_point(w: torch.Tensor, config: FixedPoint) -> Encoded:
    frac = config.frac_bits
    if frac is None:
        frac = choose_frac_bits(w, total_bits=config.total_bits)
    enc = _encode_linear(w, fixed_point_qparams(total_bits=config.total_bits, frac_bits=frac))
    enc.meta["frac_bits"] = frac
    return enc


def _encode_kmeans(w: torch.Tensor, config: KMeansQuantization) -> Encoded:
    codebook, codes = kmeans_quantize(w, bits=config.bits, seed=config.seed)
    return Encoded(
        "kmeans",
        tuple(w.shape),
        {"codes": pack_codes(codes.reshape(-1), config.bits), "codebook": codebook},
        {"bits": config.bits},
    )


# Private registry: config type -> encoder.
_ENCODERS = {
    LinearQuantization: _encode_linear_config,
    FixedPoint: _encode_fixed_point,
    KMeansQuantization: _encode_kmeans,
    Float16: lambda w, config: encode_float(w, half=True),
}


def encode_tensor(w: torch.Tensor, config: QuantizationConfig) -> Encoded:
    """Encode a weight tensor under ``config`` (linear, k-means, fixed point or float16)."""
    encoder = _ENCODERS.get(type(config))
    if encoder is None:
        raise ConfigError(f"no encoder for {type(config).__name__}; use one of {', '.join(c.__name__ for c in _ENCODERS)}.")
    return encoder(w.detach().to(torch.float32), config)


# --------------------------------------------------------------------------- Deep Compression


def encode_huffman(w: torch.Tensor, config: QuantizationConfig) -> Encoded:
    """Deep Compression storage: nonzero positions as Huffman-coded gaps, their codes Huffman-coded.

    Zero weights (pruned) stay exactly zero and cost only their share of the gaps.
    K-means clusters the nonzero weights alone, as the paper does; linear and
    fixed-point codes come from the usual quantizer (0.0 maps to the zero point).
    """
    w = w.detach().to(torch.float32)
    flat = w.reshape(-1)
    nz = torch.nonzero(flat).reshape(-1).numpy()
    gaps = np.diff(np.concatenate([[-1], nz])) if nz.size else np.zeros(0, np.int64)  # >= 1
    if isinstance(config, KMeansQuantization):
        if nz.size:
            codebook, codes = kmeans_quantize(flat[nz], bits=config.bits, seed=config.seed)
        else:
            codebook, codes = np.zeros(1, np.float32), np.zeros(0, np.uint8)
        extra, meta = {"codebook": codebook}, {"inner": "kmeans"}
    elif isinstance(config, (LinearQuantization, FixedPoint)):
        inner = encode_tensor(w, config)
        full = unpack_codes(inner.arrays["codes"], inner.meta["bits"], flat.numel()).astype(np.int64)
        codes = full[nz]
        extra = {"scale": inner.arrays["scale"], "zero_point": inner.arrays["zero_point"]}
        meta = {"inner": "linear", **{k: inner.meta[k] for k in ("qmin", "qmax", "axis")}}
    else:
        raise ConfigError(f"Huffman coding stores k-means, linear or fixed-point codes, not {type(config).__name__}.")
    arrays = dict(extra)
    for name, symbols in (("gaps", gaps), ("codes", codes)):
        bits, table_symbols, table_lengths = huffman_encode(symbols)
        arrays[f"{name}_bits"] = bits
        arrays[f"{name}_symbols"] = table_symbols
        arrays[f"{name}_lengths"] = table_lengths
    return Encoded("huffman", tuple(w.shape), arrays, {**meta, "nnz": int(nz.size)})


def _decode_huffman(enc: Encoded, count: int) -> torch.Tensor:
    nnz = enc.meta["nnz"]
    a = enc.arrays
    gaps = huffman_decode(a["gaps_bits"], a["gaps_symbols"], a["gaps_lengths"], nnz)
    codes = huffman_decode(a["codes_bits"], a["codes_symbols"], a["codes_lengths"], nnz)
    positions = np.cumsum(gaps) - 1
    if enc.meta["inner"] == "kmeans":
        flat = np.zeros(count, np.float32)
        flat[positions] = a["codebook"][codes]
        return torch.from_numpy(flat).reshape(enc.shape)
    qp = QParams(
        scale=torch.from_numpy(a["scale"]),
        zero_point=torch.from_numpy(a["zero_point"]),
        qmin=enc.meta["qmin"],
        qmax=enc.meta["qmax"],
        axis=enc.meta["axis"],
    )
    # Codes were stored offset by qmin; zeros take their channel's zero point (which decodes to 0.0).
    _, zp = qp.broadcast(len(enc.shape))
    full = (torch.zeros(enc.shape, dtype=torch.int64) + zp.to(torch.int64) - qp.qmin).reshape(-1).numpy().copy()
    full[positions] = codes
    q = torch.from_numpy(full + qp.qmin).to(torch.int32).reshape(enc.shape)
    return dequantize(q, qp)
