"""int8 defaults, recorded choices, transformer fusion, layers kept float, and accuracy-aware int8 search.

Oracles: the graph itself (op types, which initializers are int8, which nodes stay float), the fp32
model's outputs, and the search's own trail. No speed is asserted (CPUs differ).
"""

from __future__ import annotations

import time

import numpy as np
import onnx
import pytest
import torch

import squeezelab as sl
from squeezelab.engine.runtime.int8_graph import attention_shape, layer_nodes, looks_like_transformer, node_layer
from squeezelab.engine.zoo import efficientnet_lite0, mobilenet_v2, resnet18, tiny_bert, tiny_bert_inputs
from tests.conftest import state_hash


@pytest.fixture(scope="module")
def bert():
    model = tiny_bert(seed=0)
    inputs = {k: v.numpy() for k, v in tiny_bert_inputs(batch=16, seq=12, seed=1).items()}
    return model, inputs


def _one(inputs):
    return {k: v[:1] for k, v in inputs.items()}


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return float(np.mean((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))


def _float_weight_readers(onnx_bytes: bytes) -> set[str]:
    """Names of nodes that read a float32 weight matrix (rank >= 2 initializer)."""
    graph = onnx.load_from_string(onnx_bytes).graph
    floats = {i.name for i in graph.initializer if len(i.dims) >= 2 and i.data_type == onnx.TensorProto.FLOAT}
    return {n.name for n in graph.node if any(name in floats for name in n.input)}


# ----------------------------------------------------------------------------- 1. defaults and choices


def test_defaults_are_the_fast_faithful_ones():
    dyn, static = sl.Int8Dynamic(), sl.Int8Static()
    assert dyn.quantized_op_types == ("MatMul", "Gemm", "Gather") and dyn.per_channel and dyn.fusion == "auto"
    assert static.activations == "uint8" and static.per_channel
    assert sl.Recipe(runtime=dyn).label == "int8-dynamic"
    assert sl.Recipe(runtime=sl.Int8Dynamic(per_channel=False, fusion=False)).label == "int8-dynamic-pertensor-unfused"
    assert sl.Recipe(runtime=sl.Int8Static(activations="int8")).label == "int8-static-minmax-perchannel-s8act"
    for runtime in (dyn, sl.Int8Dynamic(fusion=True), sl.Int8Static(activations="int8")):
        r = sl.Recipe(runtime=runtime, layers=(sl.LayerSetting(name="fc", bits=32),))
        assert sl.Recipe.from_dict(r.to_dict()) == r and sl.Recipe.from_toml(r.to_toml()) == r


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: sl.Int8Dynamic(fusion="yes"), ["fusion='yes'", "'auto'", "False"]),
        (lambda: sl.Recipe(runtime=sl.Int8Dynamic(), layers=(sl.LayerSetting(name="fc", bits=4),)), ["['fc']", "bits=32", "Simulated"]),
    ],
)
def test_bad_int8_options_are_refused_with_the_fix(make, words):
    with pytest.raises(sl.errors.ConfigError) as info:
        make()
    for word in words:
        assert word in str(info.value)


def test_dynamic_default_quantizes_a_berts_embeddings_and_records_every_choice(bert, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # shape inference fails on BERT graphs and may leave files in the working directory
    model, inputs = bert
    c = sl.compress(model, sl.Recipe(runtime=sl.Int8Dynamic(reduce_range=True)), example_inputs=_one(inputs))
    choices = c.details["choices"]
    assert choices["op_types"][:3] == ["MatMul", "Gemm", "Gather"] and choices["per_channel"] is True
    assert choices["activations"] == "uint8" and choices["reduce_range"] is True and choices["layers_float"] == []
    assert set(choices["why"]) >= {"op_types", "per_channel", "activations", "reduce_range", "fusion"}
    assert c.quantized_weight_fraction > 0.9  # the word embeddings are int8 too
    assert list(tmp_path.iterdir()) == []


def test_static_default_has_uint8_activations_and_fused_qlinearconv(digits_cnn, tmp_path):
    model, split = digits_cnn
    x = split.x_test[:64]
    c = sl.compress(model, sl.Recipe(runtime=sl.Int8Static()), example_inputs=x[:1], calibration_data=x)
    assert c.details["choices"]["activations"] == "uint8" and "U8S8" in c.details["choices"]["why"]["activations"]
    graph = onnx.load_from_string(c.onnx_bytes).graph
    types = {i.name: i.data_type for i in graph.initializer}
    act_zero_points = [types[n.input[2]] for n in graph.node if n.op_type == "QuantizeLinear"]  # activations only
    assert act_zero_points and set(act_zero_points) == {onnx.TensorProto.UINT8}
    # The session's optimized graph fuses the QDQ groups into int8 convolutions.
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(c.onnx_bytes, options, providers=["CPUExecutionProvider"])
    ops = {n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node}
    assert "QLinearConv" in ops and "Conv" not in ops


# ----------------------------------------------------------------------------- 2. fusion


def test_fusion_auto_fuses_a_transformer_and_keeps_its_outputs(bert, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model, inputs = bert
    fp32 = sl.compress(model, example_inputs=_one(inputs))
    assert looks_like_transformer(fp32.onnx_bytes) and attention_shape(fp32.onnx_bytes) == (4, 64)
    fused = sl.compress(model, sl.Recipe(runtime=sl.Int8Dynamic(reduce_range=True)), example_inputs=_one(inputs))
    plain = sl.compress(model, sl.Recipe(runtime=sl.Int8Dynamic(reduce_range=True, fusion=False)), example_inputs=_one(inputs))
    assert fused.details["choices"]["fusion"] is True and "Attention" in fused.details["choices"]["why"]["fusion"]
    assert "QAttention" in fused.details["op_counts"] and "QAttention" not in plain.details["op_counts"]
    assert plain.details["choices"]["fusion"] is False and "fusion=False" in plain.details["choices"]["why"]["fusion"]
    reference = fp32.predict(inputs)
    assert _cosine(fused.predict(inputs), reference) > 0.98 and _cosine(plain.predict(inputs), reference) > 0.98


class _TorchEncoder(torch.nn.Module):
    """Token ids -> PyTorch's own nn.TransformerEncoderLayer -> 3 classes: ONNX Runtime's transformer optimizer
    cannot infer this export's shapes and says so with print()."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(50, 32)
        self.enc = torch.nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
        self.head = torch.nn.Linear(32, 3)

    def forward(self, ids):
        return self.head(self.enc(self.emb(ids)).mean(1))


def test_onnx_runtimes_tools_print_nothing_on_the_users_stdout(capsys, caplog, tmp_path, monkeypatch):
    import logging

    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.DEBUG, logger="squeezelab.engine.runtime.ort_tools")
    torch.manual_seed(0)
    model, ids = _TorchEncoder().eval(), torch.randint(0, 50, (8, 7))
    recipes = [sl.Recipe(runtime=sl.Int8Dynamic()), sl.Recipe(runtime=sl.Int8Static()), sl.Recipe(quantization=sl.Float16()),
               sl.Recipe(runtime=sl.WeightOnly(bits=4))]
    for recipe in recipes:
        c = sl.compress(model, recipe, example_inputs=ids[:1], calibration_data=ids)
        assert c.executable
    assert capsys.readouterr().out == ""  # a user's stdout is theirs (a CLI's --json - goes there)
    # What ONNX Runtime printed was kept, in squeezelab's debug log, not lost.
    assert "failed in shape inference" in caplog.text


def test_fusion_auto_leaves_a_cnn_alone(digits_mlp):
    model, split = digits_mlp
    c = sl.compress(model, sl.Recipe(runtime=sl.Int8Dynamic()), example_inputs=split.x_test[:1])
    assert c.details["choices"]["fusion"] is False and "not a transformer" in c.details["choices"]["why"]["fusion"]


def test_failed_fusion_falls_back_to_the_unfused_graph_and_says_why(bert, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    import squeezelab.engine.runtime.int8_graph as int8_graph

    def broken(*args, **kwargs):
        raise RuntimeError("fusion exploded")

    monkeypatch.setattr(int8_graph, "optimize_bert", broken)  # ONNX Runtime's optimizer, as fuse_transformer runs it
    model, inputs = bert
    c = sl.compress(model, sl.Recipe(runtime=sl.Int8Dynamic(fusion=True, reduce_range=True)), example_inputs=_one(inputs))
    why = c.details["choices"]["why"]["fusion"]
    assert c.details["choices"]["fusion"] is False and "failed" in why and "fusion exploded" in why
    assert "MatMulInteger" in c.details["op_counts"]


# ----------------------------------------------------------------------------- 3. layers kept float


def test_node_names_map_back_to_module_names():
    assert node_layer("/model/encoder/layer.5/output/dense/MatMul") == "model.encoder.layer.5.output.dense"
    assert node_layer("/layer2/layer2.0/downsample/downsample.0/Conv") == "layer2.0.downsample.0"
    assert node_layer("/fc/Gemm") == "fc" and node_layer("Add_3") == ""


def test_layer_mapping_on_a_cnn_and_an_unknown_layer():
    model = resnet18(num_classes=10, small_input=True)
    fp32 = sl.compress(model, example_inputs=torch.randn(1, 3, 32, 32))
    found = layer_nodes(fp32.onnx_bytes, ["layer2.0.downsample.0", "fc"])
    assert found == {"layer2.0.downsample.0": ["/layer2/layer2.0/downsample/downsample.0/Conv"], "fc": ["/fc/Gemm"]}
    with pytest.raises(sl.errors.ConfigError) as info:
        layer_nodes(fp32.onnx_bytes, ["layer9.conv"])
    assert "['layer9.conv']" in str(info.value) and "match no node" in str(info.value)


def test_a_layer_kept_float_stays_float_and_changes_the_output(bert, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model, inputs = bert
    before = state_hash(model)
    layer = "encoder.layer.1.output.dense"
    runtime = sl.Int8Dynamic(reduce_range=True, fusion=False)
    all_int8 = sl.compress(model, sl.Recipe(runtime=runtime), example_inputs=_one(inputs))
    mixed = sl.compress(
        model, sl.Recipe(runtime=runtime, layers=(sl.LayerSetting(name=layer, bits=32),)), example_inputs=_one(inputs)
    )
    assert mixed.details["choices"]["layers_float"] == [layer]
    assert _float_weight_readers(mixed.onnx_bytes) == {"/model/encoder/layer.1/output/dense/MatMul"}
    assert "/model/encoder/layer.1/output/dense/MatMul" not in _float_weight_readers(all_int8.onnx_bytes)
    assert not np.allclose(mixed.predict(inputs), all_int8.predict(inputs))
    assert state_hash(model) == before


def test_static_cnn_layer_kept_float(digits_cnn):
    model, split = digits_cnn
    x = split.x_test[:64]
    first = next(name for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d))
    c = sl.compress(
        model, sl.Recipe(runtime=sl.Int8Static(), layers=(sl.LayerSetting(name=first, bits=32),)),
        example_inputs=x[:1], calibration_data=x,
    )
    readers = _float_weight_readers(c.onnx_bytes)
    assert len(readers) == 1 and node_layer(next(iter(readers))) == first


def test_unknown_layer_for_int8_is_refused_before_export(digits_cnn):
    model, split = digits_cnn
    recipe = sl.Recipe(runtime=sl.Int8Static(), layers=(sl.LayerSetting(name="conv99", bits=32),))
    with pytest.raises(sl.errors.ConfigError) as info:
        sl.compress(model, recipe, example_inputs=split.x_test[:1], calibration_data=split.x_test[:8])
    assert "['conv99']" in str(info.value) and "named_modules" in str(info.value)


# ----------------------------------------------------------------------------- 3. search over int8


def test_int8_search_keeps_sensitive_layers_float_within_the_budget(bert, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model, inputs = bert
    data = (inputs, None)
    runtime = sl.Int8Dynamic(reduce_range=True, fusion=False)
    started = time.monotonic()
    result = sl.search(
        model, data, runtime=runtime, objective="size", max_accuracy_drop=0.0, confidence=0,
        time_budget_s=300, metric="cosine_to_baseline", cache=tmp_path / "cache", progress=False,
    )
    assert time.monotonic() - started < 300
    trail = result.trail
    assert trail["move"].iloc[0] == "start: all int8" and trail["move"].str.startswith("probe:").any()
    # A zero budget cannot hold with any int8 layer: the fp32 baseline, measured, is the honest answer.
    assert result.recipe == sl.Recipe() or result.row["drop_bound"] <= 0.0


def test_int8_search_returns_its_best_measured_result_within_a_tight_budget(digits_cnn, tmp_path):
    model, split = digits_cnn
    data = (split.x_test[:200], split.y_test[:200])
    started = time.monotonic()
    result = sl.search(
        model, data, runtime=sl.Int8Static(), objective="latency", max_accuracy_drop=0.02, time_budget_s=20,
        cache=tmp_path, progress=False, calibration_data=split.x_train[:64],
    )
    elapsed = time.monotonic() - started
    assert result.row["drop_bound"] <= 0.02
    trail = result.trail
    accepted = trail[trail["accepted"] & trail["data"].str.startswith("all")]  # subset probes are never returned
    # The answer is the fastest point measured on all the data within the budget, or fp32 when no int8 point beat it.
    fastest = max([1.0, *accepted["speedup"]])
    assert result.row["speedup"] == fastest
    if result.recipe != sl.Recipe():
        assert isinstance(result.recipe.runtime, sl.Int8Static) and result.row["label"] == result.recipe.label
    # No evaluation starts unless the slowest so far would still finish in time (plus the baseline's start-up).
    assert result.stopped in ("converged", "time budget") and elapsed < 20 + 15


def test_int8_search_refuses_train_data(digits_cnn):
    model, split = digits_cnn
    with pytest.raises(sl.errors.ConfigError) as info:
        sl.search(model, (split.x_test[:20], split.y_test[:20]), runtime=sl.Int8Dynamic(op_types=("Gemm",)),
                  train_data=(split.x_test[:20], split.y_test[:20]), progress=False, cache=False)
    assert "train_data" in str(info.value) and "does not fine-tune" in str(info.value)


def test_the_environment_record_names_this_machines_int8_defaults():
    from squeezelab.engine.core.cpu import default_reduce_range
    from squeezelab.engine.runtime.environment import environment

    text = environment()["int8_defaults"]
    assert "uint8 activations (U8S8)" in text and "Gather" in text
    assert ("7-bit weights" in text) == default_reduce_range()


def test_layers_kept_float_with_fusion(bert, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model, inputs = bert
    runtime = sl.Int8Dynamic(reduce_range=True)  # fusion "auto": tiny BERT fuses
    dense = sl.compress(
        model, sl.Recipe(runtime=runtime, layers=(sl.LayerSetting(name="encoder.layer.1.output.dense", bits=32),)),
        example_inputs=_one(inputs),
    )
    assert dense.details["choices"]["fusion"] is True
    assert _float_weight_readers(dense.onnx_bytes) == {"/model/encoder/layer.1/output/dense/MatMul"}
    # A query projection is merged into the fused Attention op: it can only stay float unfused.
    query = sl.compress(
        model, sl.Recipe(runtime=runtime, layers=(sl.LayerSetting(name="encoder.layer.0.attention.self.query", bits=32),)),
        example_inputs=_one(inputs),
    )
    why = query.details["choices"]["why"]["fusion"]
    assert query.details["choices"]["fusion"] is False and "skipped" in why and "attention.self.query" in why
    assert "/model/encoder/layer.0/attention/self/query/MatMul" in _float_weight_readers(query.onnx_bytes)


# ----------------------------------------------------------------------------- 5. static int8 CNNs


def _optimized_ops(onnx_bytes: bytes, tmp_path) -> list[str]:
    """Op types of the graph ONNX Runtime actually runs (after its QDQ fusion)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]


@pytest.mark.parametrize(
    "name, make, size",
    [
        ("resnet18-small", lambda: resnet18(num_classes=10, small_input=True), 32),
        ("mobilenet_v2", lambda: mobilenet_v2(num_classes=10, small_input=True), 32),
        ("efficientnet_lite0", lambda: efficientnet_lite0(), 64),
    ],
)
def test_static_int8_cnns_run_every_convolution_as_qlinearconv(name, make, size, tmp_path):
    torch.manual_seed(0)
    model = make().eval()
    x = torch.rand(8, 3, size, size).numpy()
    c = sl.compress(model, sl.Recipe(runtime=sl.Int8Static()), example_inputs=x[:1], calibration_data=x)
    convs = sum(1 for n in onnx.load_from_string(sl.compress(model, example_inputs=x[:1]).onnx_bytes).graph.node if n.op_type == "Conv")
    ops = _optimized_ops(c.onnx_bytes, tmp_path)
    assert ops.count("QLinearConv") == convs and "Conv" not in ops  # depthwise ones included
    assert c.details["choices"]["activations"] == "uint8" and c.details["int8_weight_fraction"] > 0.95
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    # Roughly what the model computes (EfficientNet-Lite0 loses most: 0.86 here; search keeps its sensitive layers float).
    assert _cosine(c.predict(x), expected) > 0.8


def test_int8_search_refuses_a_recipe_that_cannot_quantize_the_model(digits_cnn, tmp_path):
    model, split = digits_cnn

    class ConvOnly(torch.nn.Module):  # dynamic int8's op types reach under half of its weights
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 64, 3)
            self.fc = torch.nn.Linear(64, 2)

        def forward(self, x):
            return self.fc(self.conv(x).mean((2, 3)))

    with pytest.raises(sl.errors.ConfigError) as info:
        sl.search(ConvOnly(), (split.x_test[:20], split.y_test[:20] % 2), runtime=sl.Int8Dynamic(), progress=False, cache=tmp_path)
    assert "would quantize only" in str(info.value) and "Int8Static" in str(info.value)
