"""Bad input gets a clear SqueezeError before any slow work, and never changes the caller's model."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import squeezelab as sl
from tests.conftest import state_hash


class _Svd(torch.nn.Module):
    """A layer with an op the ONNX exporter does not support (aten::linalg_svd)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.svd(x)[1].unsqueeze(1)


def test_unexportable_layer_is_named():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), _Svd()).eval()
    with pytest.raises(sl.errors.UnexportableLayerError) as info:
        sl.compress(model, example_inputs=torch.randn(2, 4))
    assert info.value.layer == "1"
    assert "layer '1' (_Svd)" in str(info.value) and "linalg_svd" in str(info.value)
    assert "Simulated()" in str(info.value)


def test_unexportable_model_still_compresses_simulated():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), _Svd()).eval()
    c = sl.compress(model, sl.Recipe(quantization=sl.LinearQuantization(bits=4), runtime=sl.Simulated()), example_inputs=torch.randn(2, 4))
    assert c.predict(np.ones((3, 4), np.float32)).shape == (3, 1)


@pytest.mark.parametrize("bad", [None, [], np.zeros((0, 1, 8, 8), np.float32)])
def test_missing_or_empty_calibration_data_fails_before_export(digits_mlp, bad, monkeypatch):
    model, split = digits_mlp
    import squeezelab.engine.pipeline.compress as compress_module

    def never(*args, **kwargs):
        raise AssertionError("export started before calibration data was checked")

    monkeypatch.setattr(compress_module, "export_onnx", never)
    with pytest.raises(sl.errors.CalibrationError, match="calibration_data=.*Int8Dynamic"):
        sl.compress(model, sl.Recipe(runtime=sl.Int8Static()), example_inputs=split.x_test[:1], calibration_data=bad)


def test_calibration_data_of_the_wrong_shape_is_refused(digits_mlp):
    model, split = digits_mlp
    with pytest.raises(sl.errors.CalibrationError, match=r"\(5, 1, 4, 4\).*\(batch, 1, 8, 8\)"):
        sl.compress(model, sl.Recipe(runtime=sl.Int8Static()), example_inputs=split.x_test[:1], calibration_data=np.zeros((5, 1, 4, 4), np.float32))


@pytest.mark.parametrize("poison", [float("nan"), float("inf")])
def test_nan_or_inf_weights_are_refused_with_the_tensor_name(digits_mlp, poison):
    model, split = digits_mlp
    bad = sl.models.DigitsMLP()
    bad.load_state_dict(model.state_dict())
    with torch.no_grad():
        bad.net[3].weight[0, 0] = poison
    with pytest.raises(sl.errors.InvalidWeightsError, match="'net.3.weight' holds 1 NaN/Inf"):
        sl.compress(bad, example_inputs=split.x_test[:1])


def test_wrong_example_input_shape_is_explained(digits_cnn):
    model, _ = digits_cnn
    with pytest.raises(sl.errors.ExampleInputError, match=r"\(1, 3, 32, 32\).*batch dimension first"):
        sl.compress(model, example_inputs=torch.randn(1, 3, 32, 32))


def test_missing_example_inputs_is_explained(digits_mlp):
    model, _ = digits_mlp
    with pytest.raises(sl.errors.ExampleInputError, match="example_inputs is required"):
        sl.compress(model, example_inputs=None)
    with pytest.raises(sl.errors.ExampleInputError, match="no batch dimension"):
        sl.compress(model, example_inputs=torch.tensor(1.0))


def test_not_a_module_and_not_a_recipe(tmp_path):
    with pytest.raises(sl.errors.ModelError, match="ONNX file 'model.pt' not found.*PyTorch module"):
        sl.compress("model.pt", example_inputs=torch.randn(1, 4))  # a path is read as an ONNX file
    (tmp_path / "weights.pt").write_bytes(b"not onnx")
    with pytest.raises(sl.errors.ModelError, match="is not a readable ONNX model"):
        sl.compress(tmp_path / "weights.pt")
    with pytest.raises(sl.errors.ModelError, match=r"torch.nn.Module \(or an ONNX file\), got dict"):
        sl.compress({"weights": 1}, example_inputs=torch.randn(1, 4))
    with pytest.raises(sl.errors.ConfigError, match="Recipe, got dict"):
        sl.compress(torch.nn.Linear(4, 2), {"bits": 4}, example_inputs=torch.randn(1, 4))


def test_an_output_selector_that_names_no_tensor_is_refused_before_export(monkeypatch):
    import squeezelab.engine.pipeline.compress as compress_module

    class Pair(torch.nn.Module):
        def forward(self, x):
            return {"scores": x * 2, "note": "not a tensor"}

    monkeypatch.setattr(compress_module, "export_onnx", lambda *a, **k: pytest.fail("exported before the output was checked"))
    with pytest.raises(sl.errors.ModelError, match=r"output='logits' is not among the model's outputs.*\['scores', 'note'\]"):
        sl.compress(Pair(), example_inputs=torch.randn(1, 4), output="logits")
    with pytest.raises(sl.errors.ModelError, match="output='note' gives str, not a tensor"):
        sl.compress(Pair(), example_inputs=torch.randn(1, 4), output="note")
    with pytest.raises(sl.errors.ModelError, match="output=3 is out of range"):
        sl.compress(Pair(), example_inputs=torch.randn(1, 4), output=3)
    with pytest.raises(sl.errors.ConfigError, match="output=1.5"):
        sl.compress(Pair(), example_inputs=torch.randn(1, 4), output=1.5)


def test_filter_fn_with_an_onnx_runtime_is_refused(digits_mlp):
    model, split = digits_mlp
    with pytest.raises(sl.errors.ConfigError, match="filter_fn.*Simulated"):
        sl.compress(model, sl.Recipe(runtime=sl.Int8Dynamic()), example_inputs=split.x_test[:1], filter_fn=lambda m, n: True)


def test_caller_model_is_unchanged_by_every_entry_point(digits_cnn, tmp_path):
    shared, split = digits_cnn
    model = sl.models.DigitsCNN()
    model.load_state_dict(shared.state_dict())
    model.train()  # a model in training mode must come back in training mode
    before = state_hash(model)
    recipes = [
        sl.Recipe(),
        sl.Recipe(runtime=sl.Int8Static()),
        sl.Recipe(quantization=sl.KMeansQuantization(bits=2), runtime=sl.Simulated()),
    ]
    for recipe in recipes:
        c = sl.compress(model, recipe, example_inputs=split.x_test[:1], calibration_data=split.x_train[:64])
        sl.measure(c, split.test, repeats=2)
    sl.measure(model, split.test, repeats=2)
    sl.quantize(model, sl.FixedPoint())
    assert state_hash(model) == before and model.training


class _DoublesInPlace(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x.mul_(2.0))


@pytest.mark.parametrize("runtime", [sl.Onnx(), sl.Simulated()], ids=["onnx", "simulated"])
def test_caller_inputs_are_unchanged_by_a_model_that_edits_its_input(runtime):
    torch.manual_seed(0)
    x = torch.randn(5, 4)
    x_np = x.numpy().copy()
    example = x[:1].clone()
    c = sl.compress(_DoublesInPlace(), sl.Recipe(runtime=runtime), example_inputs=example)
    data = x.numpy()
    c.predict(data)
    sl.measure(c, None, repeats=2)
    np.testing.assert_array_equal(data, x_np)
    torch.testing.assert_close(example, x[:1])


def test_int8_recipe_that_quantizes_nothing_is_refused_before_quantizing(monkeypatch):
    import squeezelab.engine.runtime.ort_quantize as ort_quant

    def never(*args, **kwargs):
        raise AssertionError("quantization started before the recipe's reach was checked")

    monkeypatch.setattr(ort_quant, "convert_onnx", never)
    conv_only = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten())
    with pytest.raises(sl.errors.ConfigError, match=r"quantize nothing.*Conv 100%.*Int8Static\(\)"):
        sl.compress(conv_only, sl.Recipe(runtime=sl.Int8Dynamic()), example_inputs=torch.randn(1, 1, 6, 6))


def test_bad_exporter_or_opset_fails_before_any_work():
    with pytest.raises(sl.errors.ConfigError, match="exporter='onnxscript'"):
        sl.compress(torch.nn.Linear(4, 2), example_inputs=torch.randn(1, 4), exporter="onnxscript")
    with pytest.raises(sl.errors.ConfigError, match="opset=9"):
        sl.compress(torch.nn.Linear(4, 2), example_inputs=torch.randn(1, 4), opset=9)


def test_per_channel_axis_that_does_not_exist_is_refused():
    recipe = sl.Recipe(quantization=sl.LinearQuantization(bits=4, granularity=sl.PerChannel(axis=3)), runtime=sl.Simulated())
    with pytest.raises(sl.errors.ConfigError, match=r"PerChannel\(axis=3\).*shape \(2, 4\)"):
        sl.compress(torch.nn.Linear(4, 2), recipe, example_inputs=torch.randn(1, 4))


def test_quantize_checks_its_arguments():
    with pytest.raises(sl.errors.ConfigError, match="config='int4' is not a quantization config"):
        sl.quantize(torch.nn.Linear(4, 2), "int4")
    with pytest.raises(sl.errors.ModelError, match="got str"):
        sl.quantize("model.pt", sl.LinearQuantization())


def test_load_packed_refuses_a_different_architecture(digits_mlp, tmp_path):
    model, split = digits_mlp
    c = sl.compress(model, sl.Recipe(quantization=sl.LinearQuantization(bits=4), runtime=sl.Simulated()), example_inputs=split.x_test[:1])
    with pytest.raises(sl.errors.ArtifactError, match="does not fit this model"):
        sl.load_packed(c.artifact_bytes, sl.models.DigitsCNN())
    with pytest.raises(sl.errors.ArtifactError, match="not a squeezelab packed artifact"):
        sl.load_packed(b"garbage" * 10, sl.models.DigitsMLP())


@pytest.fixture(scope="module")
def mlp_both_kinds(digits_mlp):
    model, split = digits_mlp
    recipes = [sl.Recipe(runtime=sl.Int8Dynamic()), sl.Recipe(quantization=sl.LinearQuantization(bits=4), runtime=sl.Simulated())]
    return [sl.compress(model, r, example_inputs=split.x_test[:1]) for r in recipes]


@pytest.mark.parametrize("kind", [0, 1], ids=["onnx", "simulated"])
@pytest.mark.parametrize("shape", [(5, 64), (5, 1, 8, 9), (1, 8, 8)], ids=["flat", "wrong-size", "no-batch-axis"])
def test_predict_names_the_expected_shape(mlp_both_kinds, kind, shape):
    # The simulated MLP (Flatten first) silently accepted flat (5, 64) rows; ONNX Runtime raised its own error.
    c = mlp_both_kinds[kind]
    expected = r"input of shape " + re.escape(str(shape)) + r" does not fit the model, which takes \(batch, 1, 8, 8\)"
    with pytest.raises(sl.errors.DataError, match=expected):
        c.predict(np.zeros(shape, np.float32))


def test_predict_checks_the_number_of_inputs(mlp_both_kinds):
    x = np.zeros((3, 1, 8, 8), np.float32)
    for c in mlp_both_kinds:
        with pytest.raises(sl.errors.DataError, match=r"takes 1 input\(s\) shaped \(batch, 1, 8, 8\), got 2"):
            c.predict((x, x))
        assert c.predict(x).shape == (3, 10)  # any batch size fits


def test_measure_with_data_of_the_wrong_shape_is_explained(digits_mlp, mlp_both_kinds):
    _, split = digits_mlp
    x, y = split.test
    with pytest.raises(sl.errors.DataError, match=r"\(\d+, 64\) does not fit.*\(batch, 1, 8, 8\)"):
        sl.measure(mlp_both_kinds[1], (x.reshape(len(x), 64), y), repeats=1)


# ---------------------------------------------------------------- numbers and counts (issue #21)


def test_settings_take_numpy_numbers_and_refuse_floats_where_counts_are_meant():
    made = sl.Settings(batch_size=np.int64(8), rounds=np.array(3), warmup=np.int32(0), threads=np.int64(2),
                       confidence=np.float32(0.5), eval_batch_size=np.int64(64))
    assert made == sl.Settings(batch_size=8, rounds=3, warmup=0, threads=2, confidence=0.5, eval_batch_size=64)
    assert all(type(getattr(made, k)) is int for k in ("batch_size", "rounds", "warmup", "threads", "eval_batch_size"))
    assert type(made.confidence) is float
    for bad, words in [(dict(rounds=3.0), "rounds=3.0 must be a non-negative integer"),
                       (dict(batch_size=True), "batch_size=True must be a positive integer"),
                       (dict(threads=2.0), "threads=2.0 must be a positive integer")]:
        with pytest.raises(sl.errors.ConfigError, match=re.escape(words)):
            sl.Settings(**bad)


def test_argument_helpers_take_numpy_scalars_and_0d_arrays_as_plain_numbers():
    from squeezelab.engine.core.arguments import count, finite_number, fraction, grid_lists, width

    assert count("rounds", np.array(3), low=0) == 3 and type(count("rounds", np.int64(3), low=0)) is int
    assert finite_number("max_accuracy_drop", np.float32(0.25), low=0) == 0.25
    assert width(np.int8(4)) == 4 and fraction(np.array(0.5)) == 0.5
    assert grid_lists(np.array([8, 4]), np.float32(0.5), layout="product") == ((8, 4), (0.5,))
    with pytest.raises(sl.errors.ConfigError, match=r"rounds=4.0 is not allowed: it must be an integer >= 0"):
        count("rounds", 4.0, low=0)
    with pytest.raises(sl.errors.ConfigError, match=r"bits=4.0 is not allowed"):
        width(4.0)


class _Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 8)

    def forward(self, x):
        return x + self.fc(x)


def test_layer_pruning_that_would_remove_every_block_is_refused_not_blamed_on_coupling():
    # keep=0, or a ratio that rounds to every block, once ran and failed the export check, whose message
    # blamed Torch-Pruning's coupling bugs (#481).
    with pytest.raises(sl.errors.ConfigError, match=r"keep=0 is not allowed.*1\.\.10000.*remove every block"):
        sl.LayerPruning(keep=0)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), _Block(), _Block(), torch.nn.Linear(8, 2))
    before = state_hash(model)
    with pytest.raises(sl.errors.ConfigError) as info:
        sl.prune(model, sl.LayerPruning(ratio=0.9), example_inputs=torch.randn(2, 4))
    message = str(info.value)
    for word in ["ratio=0.9", "2 removable blocks drops all 2", "ratio=0.5 drops 1", "keep=1"]:
        assert word in message
    assert "#481" not in message and state_hash(model) == before
    assert len([m for m in sl.prune(model, sl.LayerPruning(ratio=0.5), example_inputs=torch.randn(2, 4))
                if isinstance(m, torch.nn.Identity)]) == 1


def test_numpy_integers_pick_outputs_and_opsets_as_python_ints_do():
    import numpy as np

    from squeezelab.engine.core.outputs import select_output, selector_name

    out = (torch.zeros(2), torch.ones(3))
    assert torch.equal(select_output(out, np.int64(1)), out[1]) and selector_name(np.int64(1)) == selector_name(1) == "1"
    net = torch.nn.Sequential(torch.nn.Linear(4, 2))
    c = sl.compress(net, example_inputs=torch.randn(1, 4), opset=np.int64(17))
    assert c.details["opset"] == 17
    with pytest.raises(sl.errors.ConfigError, match="opset=17.0"):
        sl.compress(net, example_inputs=torch.randn(1, 4), opset=17.0)
