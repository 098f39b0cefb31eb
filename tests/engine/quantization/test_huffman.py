"""Huffman coding and the Deep-Compression file: exact round trips, real sizes, zeros kept."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import squeezelab as sl
from squeezelab.engine.pipeline.artifact import unpack_encoded
from squeezelab.engine.quantization.huffman import huffman_decode, huffman_encode, huffman_lengths


@pytest.mark.parametrize(
    "symbols",
    [
        np.random.default_rng(0).geometric(0.3, size=5000),
        np.random.default_rng(1).integers(0, 32, size=777),
        np.array([5] * 9),
        np.array([0, 1]),
        np.array([], dtype=np.int64),
    ],
    ids=["geometric", "uniform", "single-symbol", "two", "empty"],
)
def test_round_trip(symbols):
    bits, table_symbols, table_lengths = huffman_encode(symbols)
    np.testing.assert_array_equal(huffman_decode(bits, table_symbols, table_lengths, len(symbols)), symbols)


def test_code_is_prefix_free_and_near_the_entropy():
    rng = np.random.default_rng(0)
    symbols = rng.geometric(0.3, size=20000)
    lengths = huffman_lengths(symbols)
    assert sum(2.0 ** -n for n in lengths.values()) <= 1.0  # Kraft: a prefix code exists
    _, counts = np.unique(symbols, return_counts=True)
    p = counts / counts.sum()
    entropy = float(-(p * np.log2(p)).sum())
    bits, _, _ = huffman_encode(symbols)
    assert entropy * len(symbols) / 8 <= bits.nbytes <= (entropy + 1) * len(symbols) / 8 + 1
    fixed = math.ceil(math.log2(len(lengths))) * len(symbols) / 8
    assert bits.nbytes < fixed


@pytest.mark.parametrize("quantization", [sl.KMeansQuantization(bits=4), sl.LinearQuantization(bits=5), sl.FixedPoint(total_bits=6)])
def test_deep_compression_file_round_trips_and_keeps_zeros(digits_mlp, tmp_path, quantization):
    model, split = digits_mlp
    recipe = sl.Recipe(pruning=sl.MagnitudePruning(sparsity=0.9), quantization=quantization, runtime=sl.Simulated(coding="huffman"))
    c = sl.compress(model, recipe, example_inputs=split.x_test[:1])
    path = c.save(tmp_path / "model.dc")
    assert path.stat().st_size == c.size_bytes
    loaded = sl.load_packed(path, sl.models.DigitsMLP())
    x = torch.from_numpy(split.x_test)
    torch.testing.assert_close(loaded(x), c.model(x), rtol=0, atol=0)
    for i in (1, 3, 5):
        assert float((loaded.net[i].weight == 0).float().mean()) >= 0.9 - 1e-3
    packed = sl.compress(model, sl.Recipe(pruning=sl.MagnitudePruning(sparsity=0.9), quantization=quantization, runtime=sl.Simulated()),
                         example_inputs=split.x_test[:1])
    assert c.size_bytes < packed.size_bytes

    def weight_bytes(compressed):
        encoded, _ = unpack_encoded(compressed.artifact_bytes)
        return sum(a.nbytes for name, e in encoded.items() if name.endswith("weight") for a in e.arrays.values())

    assert weight_bytes(c) < 0.45 * weight_bytes(packed)  # positions + codes, entropy-coded
    assert "huffman (simulated)" in c.recipe.label and sl.Recipe.from_dict(recipe.to_dict()) == recipe


def test_trained_kmeans_on_a_pruned_model_keeps_zeros(digits_mlp):
    model, split = digits_mlp
    pruned = sl.prune(model, sl.MagnitudePruning(sparsity=0.8))
    sl.pruning.bake_masks_(pruned)
    shared = sl.finetune(sl.quantization.share_weights(pruned, sl.KMeansQuantization(bits=3)), split.train, epochs=1)
    sl.quantization.bake_shared_weights_(shared)
    for i in (1, 3, 5):
        w = shared.net[i].weight
        assert float((w == 0).float().mean()) >= 0.8 - 1e-3 and len(torch.unique(w[w != 0])) <= 8


def test_huffman_needs_a_quantizer():
    with pytest.raises(sl.errors.ConfigError, match="coding='huffman'\\) codes quantized weights"):
        sl.Recipe(runtime=sl.Simulated(coding="huffman"))
    with pytest.raises(sl.errors.ConfigError, match="coding='zip'"):
        sl.Simulated(coding="zip")
