"""Bit packing, fixed point and k-means weight sharing: exact properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from squeezelab.engine.quantization import (
    choose_frac_bits,
    dequantize,
    fixed_point_qparams,
    kmeans_quantize,
    pack_codes,
    quantize,
    unpack_codes,
)


@pytest.mark.parametrize("bits", list(range(1, 17)))
def test_pack_roundtrip_and_exact_size(rng, bits):
    count = 1001
    codes = rng.integers(0, 2**bits, size=count)
    packed = pack_codes(codes, bits)
    assert packed.dtype == np.uint8
    assert packed.nbytes == math.ceil(count * bits / 8)
    np.testing.assert_array_equal(unpack_codes(packed, bits, count), codes)


def test_pack_refuses_codes_that_do_not_fit():
    with pytest.raises(ValueError, match="must lie in"):
        pack_codes(np.array([0, 8]), 3)


@pytest.mark.parametrize(("total", "frac"), [(8, 4), (8, 7), (16, 12), (4, 1)])
def test_static_fixed_point_values(total, frac):
    qp = fixed_point_qparams(total_bits=total, frac_bits=frac)
    step = 2.0**-frac
    x = torch.tensor([0.0, step, -step, 1.26 * step, 1e9, -1e9])
    y = dequantize(quantize(x, qp), qp)
    top = (2 ** (total - 1) - 1) * step
    bottom = -(2 ** (total - 1)) * step
    assert y.tolist() == [0.0, step, -step, step, top, bottom]


@pytest.mark.parametrize("scale", [0.003, 0.4, 1.0, 3.7, 250.0])
@pytest.mark.parametrize("total", [4, 8, 16])
def test_dynamic_fixed_point_is_finest_without_clipping(rng, scale, total):
    x = torch.from_numpy(rng.normal(size=500).astype(np.float32) * scale)
    frac = choose_frac_bits(x, total_bits=total)
    absmax = float(x.abs().max())
    qmax = 2 ** (total - 1) - 1
    assert absmax <= qmax * 2.0**-frac  # covers the range: nothing clips
    assert absmax > qmax * 2.0 ** -(frac + 1)  # one more fraction bit would clip
    qp = fixed_point_qparams(total_bits=total, frac_bits=frac)
    err = (dequantize(quantize(x, qp), qp) - x).abs().max()
    assert float(err) <= 2.0**-frac / 2 + 1e-12


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5])
def test_kmeans_uses_at_most_2_to_the_bits_values(rng, bits):
    w = torch.from_numpy(rng.normal(size=(64, 32)).astype(np.float32))
    codebook, codes = kmeans_quantize(w, bits=bits)
    assert codebook.shape == (2**bits,)
    assert np.all(np.diff(codebook) > 0)
    assert codes.shape == (64, 32) and int(codes.max()) < 2**bits
    decoded = codebook[codes]
    # Each weight maps to its nearest centroid.
    nearest = np.abs(w.numpy()[..., None] - codebook).argmin(axis=-1)
    np.testing.assert_array_equal(codes, nearest)
    # More centroids, lower error: 2^b clusters beat a linear grid with the same count.
    grid = np.linspace(float(w.min()), float(w.max()), 2**bits)
    grid_err = np.abs(w.numpy()[..., None] - grid).min(axis=-1).mean()
    assert np.abs(decoded - w.numpy()).mean() < grid_err


def test_kmeans_with_few_distinct_values_is_exact():
    w = torch.tensor([[0.5, -1.0], [0.5, 2.0]])
    codebook, codes = kmeans_quantize(w, bits=4)
    np.testing.assert_array_equal(codebook[codes], w.numpy())
    assert codebook.size == 3


def test_kmeans_is_deterministic(rng):
    w = torch.from_numpy(rng.normal(size=2000).astype(np.float32))
    a = kmeans_quantize(w, bits=3, seed=1)
    b = kmeans_quantize(w, bits=3, seed=1)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
