"""compress(): every recipe produces what it claims, checked against the fp32 model."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

import squeezelab as sl
from squeezelab.engine.pipeline.artifact import unpack_encoded
from tests.conftest import state_hash


def _ops(c: sl.Compressed) -> list[str]:
    return [n.op_type for n in onnx.load_from_string(c.onnx_bytes).graph.node]


def _acc(pred: np.ndarray, y: np.ndarray) -> float:
    return float((pred.argmax(1) == y).mean())


@pytest.fixture(scope="module")
def cnn_results(digits_cnn):
    model, split = digits_cnn
    ex = torch.from_numpy(split.x_test[:1])
    recipes = {
        "fp32": sl.Recipe(),
        "fp16": sl.Recipe(quantization=sl.Float16()),
        "dynamic": sl.Recipe(runtime=sl.Int8Dynamic()),
        "static": sl.Recipe(runtime=sl.Int8Static()),
        "static_entropy": sl.Recipe(runtime=sl.Int8Static(calibration="entropy")),
        "static_s8": sl.Recipe(runtime=sl.Int8Static(activations="int8")),
        "static_percentile_u8": sl.Recipe(runtime=sl.Int8Static(calibration="percentile", activations="uint8", per_channel=False)),
        "static_gemm_only": sl.Recipe(runtime=sl.Int8Static(op_types=("Gemm", "MatMul"))),
    }
    before = state_hash(model)
    out = {k: sl.compress(model, r, example_inputs=ex, calibration_data=split.x_train[:300]) for k, r in recipes.items()}
    assert state_hash(model) == before  # the caller's model is never changed
    return out


def test_fp32_onnx_matches_pytorch(digits_cnn, cnn_results):
    model, split = digits_cnn
    expected = model(torch.from_numpy(split.x_test)).detach().numpy()
    got = cnn_results["fp32"].predict(split.x_test)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert cnn_results["fp32"].executable and cnn_results["fp32"].bits == 32


def test_float16_onnx_is_half_size_and_close(digits_cnn, cnn_results):
    model, split = digits_cnn
    expected = model(torch.from_numpy(split.x_test)).detach().numpy()
    got = cnn_results["fp16"].predict(split.x_test)
    np.testing.assert_allclose(got, expected, rtol=2e-2, atol=2e-2)
    ratio = cnn_results["fp16"].size_bytes / cnn_results["fp32"].size_bytes
    assert 0.45 < ratio < 0.56
    inits = onnx.load_from_string(cnn_results["fp16"].onnx_bytes).graph.initializer
    assert all(i.data_type == onnx.TensorProto.FLOAT16 for i in inits if len(i.dims) >= 2)


def test_dynamic_int8_quantizes_matmuls_but_not_convolutions(digits_cnn, cnn_results):
    ops = _ops(cnn_results["dynamic"])
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops
    assert "ConvInteger" not in ops and ops.count("Conv") == 2  # ConvInteger is slow / fails to load


@pytest.mark.parametrize("key", ["static", "static_entropy", "static_percentile_u8"])
def test_static_int8_is_qdq_with_int8_weights_and_keeps_accuracy(digits_cnn, cnn_results, key):
    model, split = digits_cnn
    c = cnn_results[key]
    ops = _ops(c)
    assert ops.count("QuantizeLinear") >= 3 and ops.count("DequantizeLinear") >= 6
    proto = onnx.load_from_string(c.onnx_bytes)
    weights = [i for i in proto.graph.initializer if i.name.endswith("weight_quantized")]
    assert len(weights) == 4 and all(w.data_type == onnx.TensorProto.INT8 for w in weights)
    base = _acc(model(torch.from_numpy(split.x_test)).detach().numpy(), split.y_test)
    assert base - _acc(c.predict(split.x_test), split.y_test) <= 0.02


def test_static_op_types_keeps_convolutions_in_fp32(cnn_results):
    ops = _ops(cnn_results["static_gemm_only"])
    assert ops.count("Conv") == 2 and ops.count("Gemm") == 2
    proto = onnx.load_from_string(cnn_results["static_gemm_only"].onnx_bytes)
    quantized = {i.name for i in proto.graph.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) >= 2}
    assert quantized == {"classifier.1.weight_quantized", "classifier.3.weight_quantized"}


def test_static_activation_type_is_what_was_asked(cnn_results):
    def act_types(c):
        proto = onnx.load_from_string(c.onnx_bytes)
        return {
            i.data_type
            for i in proto.graph.initializer
            if i.name.endswith("_zero_point") and "weight" not in i.name and "bias" not in i.name
        }

    assert act_types(cnn_results["static"]) == {onnx.TensorProto.UINT8}  # the default: ONNX Runtime's fast x86 path
    assert act_types(cnn_results["static_s8"]) == {onnx.TensorProto.INT8}  # what GPU / TensorRT want, when asked
    assert act_types(cnn_results["static_percentile_u8"]) == {onnx.TensorProto.UINT8}


def test_int8_files_are_smaller(cnn_results):
    fp32 = cnn_results["fp32"].size_bytes
    for key in ("dynamic", "static", "static_entropy"):
        assert cnn_results[key].size_bytes < 0.4 * fp32
    assert cnn_results["static"].details["int8_weight_fraction"] == 1.0
    # Dynamic int8 leaves the two convolutions fp32: 144 + 4,608 of 38,160 weight elements.
    assert cnn_results["dynamic"].details["int8_weight_fraction"] == pytest.approx((32768 + 640) / 38160)


SIMULATED = {
    "linear4": sl.LinearQuantization(bits=4),
    "linear3_affine_tensor": sl.LinearQuantization(bits=3, symmetric=False, granularity=sl.PerTensor()),
    "kmeans4": sl.KMeansQuantization(bits=4),
    "fixed8": sl.FixedPoint(total_bits=8),
    "fixed6_q1_4": sl.FixedPoint(total_bits=6, frac_bits=4),
    "fp16": sl.Float16(),
}


@pytest.mark.parametrize("name", list(SIMULATED))
def test_simulated_artifact_round_trips_to_identical_outputs(digits_mlp, tmp_path, name):
    model, split = digits_mlp
    recipe = sl.Recipe(quantization=SIMULATED[name], runtime=sl.Simulated())
    c = sl.compress(model, recipe, example_inputs=split.x_test[:1])
    assert not c.executable and c.onnx_bytes is None and "(simulated)" in repr(c)
    path = c.save(tmp_path / f"{name}.sqz")
    assert path.stat().st_size == c.size_bytes
    loaded = sl.load_packed(path, sl.models.DigitsMLP())
    x = torch.from_numpy(split.x_test)
    torch.testing.assert_close(loaded(x), c.model(x), rtol=0, atol=0)
    np.testing.assert_array_equal(c.predict(split.x_test), c.model(x).detach().numpy())
    meta = json.loads((tmp_path / f"{name}.sqz.json").read_text())
    assert meta["recipe"] == recipe.to_dict() and meta["executable"] is False


@pytest.mark.parametrize("bits", [2, 3, 4, 6, 8])
def test_simulated_linear_weights_take_at_most_2_to_the_bits_levels(digits_mlp, bits):
    model, split = digits_mlp
    c = sl.compress(model, sl.Recipe(quantization=sl.LinearQuantization(bits=bits), runtime=sl.Simulated()), example_inputs=split.x_test[:1])
    for layer in (c.model.net[1], c.model.net[3], c.model.net[5]):
        for row in layer.weight:
            assert len(torch.unique(row)) <= 2**bits - 1  # narrow symmetric range
    torch.testing.assert_close(c.model.net[1].bias, model.net[1].bias)  # biases stay float32


def test_packed_size_is_the_real_packed_codes(digits_mlp):
    model, split = digits_mlp
    sizes = {}
    for bits in (2, 4, 8):
        c = sl.compress(model, sl.Recipe(quantization=sl.LinearQuantization(bits=bits), runtime=sl.Simulated()), example_inputs=split.x_test[:1])
        encoded, recipe = unpack_encoded(c.artifact_bytes)
        assert recipe == c.recipe.to_dict()
        codes = encoded["net.1.weight"].arrays["codes"]
        assert codes.nbytes == 128 * 64 * bits // 8
        sizes[bits] = c.size_bytes
    assert sizes[2] < sizes[4] < sizes[8]
    n_weights = 64 * 128 + 128 * 64 + 64 * 10
    assert sizes[4] - sizes[2] == pytest.approx(n_weights * 2 / 8, abs=8)


def test_kmeans_simulated_layer_uses_its_codebook(digits_mlp):
    model, split = digits_mlp
    c = sl.compress(model, sl.Recipe(quantization=sl.KMeansQuantization(bits=3), runtime=sl.Simulated()), example_inputs=split.x_test[:1])
    for layer in (c.model.net[1], c.model.net[3], c.model.net[5]):
        assert len(torch.unique(layer.weight)) <= 8


def test_filter_fn_chooses_layers(digits_mlp):
    model, split = digits_mlp
    only_first = lambda module, fqn: fqn == "net.1"  # noqa: E731
    c = sl.compress(model, sl.Recipe(quantization=sl.LinearQuantization(bits=2), runtime=sl.Simulated()), example_inputs=split.x_test[:1], filter_fn=only_first)
    assert not torch.equal(c.model.net[1].weight, model.net[1].weight)
    assert torch.equal(c.model.net[3].weight, model.net[3].weight)


def test_quantize_returns_a_copy_and_quantize_underscore_mutates(digits_mlp):
    model, _ = digits_mlp
    before = state_hash(model)
    q = sl.quantize(model, sl.LinearQuantization(bits=4))
    assert state_hash(model) == before and state_hash(q) != before
    target = sl.models.DigitsMLP()
    target.load_state_dict(model.state_dict())
    assert sl.quantize_(target, sl.LinearQuantization(bits=4)) is None
    assert state_hash(target) == state_hash(q)


def test_save_refuses_to_overwrite(cnn_results, tmp_path):
    c = cnn_results["static"]
    path = c.save(tmp_path / "m.int8.onnx")
    assert path.read_bytes() == c.onnx_bytes
    with pytest.raises(sl.errors.ArtifactError, match="overwrite=True"):
        c.save(path)
    c.save(path, overwrite=True)
    meta = json.loads((tmp_path / "m.int8.onnx.json").read_text())
    assert meta["executable"] is True and meta["size_bytes"] == c.size_bytes


def test_multi_input_model_exports_and_predicts():
    class Two(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(4, 3)
            self.b = torch.nn.Linear(5, 3)

        def forward(self, x, z):
            return self.a(x) + self.b(z)

    torch.manual_seed(0)
    m = Two().eval()
    x, z = torch.randn(6, 4), torch.randn(6, 5)
    # 7-bit weights: exact on AVX2-only and VNNI CPUs alike, so the tolerance means the same on both.
    c = sl.compress(m, sl.Recipe(runtime=sl.Int8Dynamic(reduce_range=True)), example_inputs=(x[:1], z[:1]))
    np.testing.assert_allclose(c.predict((x.numpy(), z.numpy())), m(x, z).detach().numpy(), atol=0.05)


@pytest.mark.parametrize(
    "calibration",
    [
        lambda x: [x[:40], x[40:100]],  # a list of input batches
        lambda x: torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(x)), batch_size=25),
        lambda x: (x, np.zeros(len(x), dtype=np.int64)),  # (x, y): labels ignored
    ],
    ids=["list-of-batches", "dataloader-of-x", "x-y-pair"],
)
def test_calibration_data_forms(digits_mlp, calibration):
    model, split = digits_mlp
    x = split.x_train[:100]
    c = sl.compress(model, sl.Recipe(runtime=sl.Int8Static()), example_inputs=split.x_test[:1], calibration_data=calibration(x))
    reference = sl.compress(model, sl.Recipe(runtime=sl.Int8Static()), example_inputs=split.x_test[:1], calibration_data=x)
    assert c.onnx_bytes == reference.onnx_bytes  # the same 100 samples, whatever their packaging


def test_metadata_records_the_opset_actually_written(digits_mlp):
    model, split = digits_mlp
    c = sl.compress(model, example_inputs=split.x_test[:1], opset=17)
    assert c.metadata()["opset"] == 17 == onnx.load_from_string(c.onnx_bytes).opset_import[0].version


def test_dynamo_exporter_gives_the_same_outputs(digits_mlp):
    model, split = digits_mlp
    c = sl.compress(model, sl.Recipe(), example_inputs=split.x_test[:1], exporter="dynamo")
    assert c.details["exporter"] == "dynamo" and c.details["opset"] == 18  # dynamo needs >= 18
    expected = model(torch.from_numpy(split.x_test)).detach().numpy()
    np.testing.assert_allclose(c.predict(split.x_test), expected, rtol=1e-4, atol=1e-4)
