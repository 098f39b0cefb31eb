"""Per-layer settings, layer sensitivity and the accuracy-budget search."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import squeezelab as sl
from squeezelab.engine.core.recipe import LayerSetting
from squeezelab.engine.core.layers import prunable_layers
from squeezelab.engine.explore.sensitivity import bits_probe
from tests.conftest import state_hash


def _distinct(weight: torch.Tensor) -> int:
    return max(len(torch.unique(row)) for row in weight.detach().reshape(weight.shape[0], -1))


def test_layer_settings_round_trip_and_label():
    r = sl.Recipe(
        pruning=sl.MagnitudePruning(sparsity=0.0),
        quantization=sl.LinearQuantization(bits=8),
        runtime=sl.Simulated(),
        layers=(LayerSetting(name="net.0", bits=3, sparsity=0.5), LayerSetting(name="net.2", bits=32)),
    )
    assert r.label == "magnitude0%-layer + linear8-sym-perchannel + [net.0=3b/50% net.2=fp32] (simulated)"
    assert sl.Recipe.from_dict(r.to_dict()) == r and sl.Recipe.from_toml(r.to_toml()) == r
    assert hash(r) == hash(sl.Recipe.from_dict(r.to_dict()))
    assert "layers" not in sl.Recipe().to_dict()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(layers=(LayerSetting(name="a", bits=4),)), "per-layer bits need a simulated weight quantizer"),
        (dict(quantization=sl.LinearQuantization(), runtime=sl.Simulated(), layers=(LayerSetting(name="a", sparsity=0.5),)), "per-layer sparsity needs a pruning step"),
        (dict(quantization=sl.LinearQuantization(), runtime=sl.Simulated(), layers=(LayerSetting(name="a", bits=4), LayerSetting(name="a", bits=3))), "twice"),
        (dict(layers=[{"name": "a"}]), "expected a dict with a 'type' key|sets nothing"),
    ],
)
def test_bad_layer_settings(kwargs, message):
    with pytest.raises(sl.errors.ConfigError, match=message):
        sl.Recipe(**kwargs)


@pytest.mark.parametrize("kwargs, message", [(dict(bits=1), "bits=1"), (dict(bits=17), "bits=17"), (dict(sparsity=1.0), "sparsity=1.0"), (dict(), "sets nothing")])
def test_bad_layer_setting_values(kwargs, message):
    with pytest.raises(sl.errors.ConfigError, match=message):
        LayerSetting(name="fc", **kwargs)


def test_per_layer_bits_and_sparsity_are_applied_layer_by_layer(digits_cnn):
    model, split = digits_cnn
    before = state_hash(model)
    r = sl.Recipe(
        pruning=sl.MagnitudePruning(sparsity=0.0),
        quantization=sl.LinearQuantization(bits=8),
        runtime=sl.Simulated(),
        layers=(LayerSetting(name="features.2", bits=2, sparsity=0.5), LayerSetting(name="classifier.3", bits=32)),
    )
    c = sl.compress(model, r, example_inputs=split.x_test[:1])
    assert state_hash(model) == before
    w = dict(c.model.named_modules())
    assert _distinct(w["features.2"].weight) <= 3  # 2-bit symmetric: {-s, 0, s} per channel
    assert (w["features.2"].weight == 0).float().mean() >= 0.5
    assert 3 < _distinct(w["features.0"].weight) <= 255  # the recipe-wide 8 bits
    assert torch.equal(w["classifier.3"].weight, model.get_submodule("classifier.3").weight)  # kept float32
    uniform = sl.compress(model, sl.Recipe(quantization=sl.LinearQuantization(bits=8), runtime=sl.Simulated()), example_inputs=split.x_test[:1])
    # features.2 (4,608 weights) saves 6 bits each; classifier.3 (640) costs 24 more
    assert c.size_bytes < uniform.size_bytes - 4608 * 6 / 8 + 640 * 24 / 8 + 64


def test_per_layer_channel_ratios_remove_real_channels(digits_cnn):
    model, split = digits_cnn
    r = sl.Recipe(pruning=sl.ChannelPruning(ratio=0.0), layers=(LayerSetting(name="features.2", sparsity=0.5),))
    c = sl.compress(model, r, example_inputs=split.x_test[:1])
    assert c.model.features[0].out_channels == model.features[0].out_channels
    assert c.model.features[2].out_channels == model.features[2].out_channels // 2
    assert c.model.classifier[1].in_features == model.classifier[1].in_features // 2


def test_unknown_layer_names_are_refused(digits_cnn):
    model, split = digits_cnn
    bad_bits = sl.Recipe(quantization=sl.LinearQuantization(), runtime=sl.Simulated(), layers=(LayerSetting(name="fc9", bits=4),))
    with pytest.raises(sl.errors.ConfigError, match=r"fc9.*known layers"):
        sl.compress(model, bad_bits, example_inputs=split.x_test[:1])
    bad_prune = sl.Recipe(pruning=sl.MagnitudePruning(sparsity=0.0), layers=(LayerSetting(name="fc9", sparsity=0.5),))
    with pytest.raises(sl.errors.ConfigError, match=r"fc9.*prunable layers"):
        sl.compress(model, bad_prune, example_inputs=split.x_test[:1])


def test_sensitivity_table(digits_cnn, tmp_path):
    model, split = digits_cnn
    table = sl.layer_sensitivity(model, split.test, bits=(2, 8), sparsity=(0.9,), cache=tmp_path, progress=False)
    layers = [name for name, _ in prunable_layers(model)]
    assert table["layer"].tolist() == [name for name in layers for _ in range(3)]
    assert set(table.columns) >= {"layer", "parameters", "axis", "value", "accuracy", "accuracy_drop"}
    base = table.attrs["baseline_value"]
    assert table.attrs["metric"] == "top-1 accuracy" and table.attrs["metric_key"] == "accuracy"
    assert np.allclose(table["accuracy_drop"], base - table["accuracy"]) and np.allclose(table["drop"], table["accuracy_drop"])
    eight = table[(table["axis"] == "bits") & (table["value"] == 8)]
    assert (eight["accuracy_drop"].abs() <= 0.005).all()  # 8 bits on one layer costs (almost) nothing
    two = table[(table["axis"] == "bits") & (table["value"] == 2)]
    assert two["accuracy_drop"].max() > 0.02  # and 2 bits hurts some layer clearly
    # a probe changes its own layer only
    probe = bits_probe(sl.LinearQuantization(), "features.0", 2, layers)
    c = sl.compress(model, probe, example_inputs=split.x_test[:1])
    for name in layers[1:]:
        assert torch.equal(c.model.get_submodule(name).weight, model.get_submodule(name).weight)
    again = sl.layer_sensitivity(model, split.test, bits=(2, 8), sparsity=(0.9,), cache=tmp_path, progress=False)
    assert again.equals(table)


@pytest.fixture(scope="module")
def halves(digits_mlp):
    model, split = digits_mlp
    x, y = split.test
    return model, (x[:225], y[:225]), (x[225:], y[225:])


def test_search_respects_its_budget_on_held_out_data(halves, tmp_path):
    model, search_data, held_out = halves
    result = sl.search(
        model, search_data, max_accuracy_drop=0.01, bits=(8, 4, 3, 2), sparsity=(0.0, 0.5, 0.8),
        validation_data=held_out, cache=tmp_path, progress=False,
    )
    assert result.stopped == "converged"
    assert result.row["accuracy_drop"] <= 0.01
    assert result.held_out["accuracy_drop"] <= 0.01  # judged on samples the search never saw
    assert result.row["compression"] > 5  # it did compress: well past 8-bit packed (about 3.7x)
    accepted = result.trail[result.trail["accepted"]]
    assert (accepted["drop_bound"] <= 0.01).all()
    # the recipe rebuilds the measured figures exactly
    c = sl.compress(result.model, result.recipe, example_inputs=search_data[0][:1])
    assert c.size_bytes == result.row["size_bytes"]


def test_search_stops_on_its_time_budget_with_the_best_so_far(halves, tmp_path):
    model, search_data, _ = halves
    result = sl.search(model, search_data, max_accuracy_drop=0.01, time_budget_s=0.001, cache=tmp_path, progress=False)
    assert result.stopped == "time budget"
    assert result.recipe is not None and len(result.trail) >= 1
    assert result.row["accuracy_drop"] <= 0.01


def test_search_with_an_impossible_budget_returns_the_baseline(halves, tmp_path):
    model, search_data, _ = halves
    # the gentlest setting allowed (2 bits, 90% pruned) breaks a zero budget: nothing smaller holds
    result = sl.search(model, search_data, max_accuracy_drop=0.0, bits=(2,), sparsity=(0.9,), cache=tmp_path, progress=False)
    assert result.recipe == sl.Recipe()
    assert result.row["accuracy_drop"] == 0.0 and result.row["size_bytes"] == result.baseline["size_bytes"]
    assert result.trail["accepted"].tolist() == [False]


def test_search_fine_tunes_a_sparsity_step_that_breaks_the_budget(halves, digits_mlp, tmp_path):
    model, search_data, _ = halves
    _, split = digits_mlp
    before = state_hash(model)
    result = sl.search(
        model, search_data, max_accuracy_drop=0.01, bits=(8,), sparsity=(0.0, 0.9, 0.95),
        train_data=split.train, cache=tmp_path, progress=False,
    )
    tuned = result.trail[result.trail["move"].str.endswith("+ fine-tune")]
    assert len(tuned) >= 1
    assert result.trail["accepted"].map(type).eq(bool).all()  # every evaluation says whether it was kept
    assert state_hash(model) == before
    if result.model is not model:  # a fine-tuned step was kept: the recipe applies to the tuned copy
        c = sl.compress(result.model, result.recipe, example_inputs=search_data[0][:1])
        assert c.size_bytes == result.row["size_bytes"]


def test_search_for_latency_removes_channels_and_runs_in_onnx_runtime(digits_cnn, tmp_path, timed_by_size):
    # Times modelled as proportional to the file's bytes (fewer channels: faster), so what the search keeps
    # follows from its logic, not from which variant this CPU happened to run faster (issue #21).
    model, split = digits_cnn
    result = sl.search(model, split.test, max_accuracy_drop=0.02, objective="latency", sparsity=(0.0, 0.25, 0.5), cache=tmp_path, progress=False)
    assert result.recipe.executable and isinstance(result.recipe.pruning, sl.ChannelPruning)
    assert result.recipe.layers and all(item.sparsity > 0 for item in result.recipe.layers)  # channels removed
    assert result.row["accuracy_drop"] <= 0.02
    assert result.row["size_bytes"] < result.baseline["size_bytes"]  # a genuinely smaller dense model
    trail = result.trail
    assert trail["speedup"].notna().all()
    # the speedup is the modelled one (baseline bytes / candidate bytes), and the answer the fastest kept
    assert trail["speedup"].to_numpy() == pytest.approx(result.baseline["size_bytes"] / trail["size_bytes"].to_numpy())
    assert result.row["speedup"] == trail.loc[trail["accepted"], "speedup"].max() > 1
    c = sl.compress(result.model, result.recipe, example_inputs=split.x_test[:1])
    assert c.size_bytes == result.row["size_bytes"]  # the recipe rebuilds the measured model


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(objective="energy"), "objective='energy'"),
        (dict(max_accuracy_drop=-0.1), "max_accuracy_drop=-0.1"),
        (dict(time_budget_s=0), "time_budget_s=0"),
        (dict(confidence=1.0), "confidence=1.0"),
        (dict(quantization="float16"), "quantization='float16'"),
    ],
)
def test_bad_search_arguments(halves, kwargs, message):
    model, search_data, _ = halves
    with pytest.raises(sl.errors.ConfigError, match=message):
        sl.search(model, search_data, cache=False, progress=False, **kwargs)
