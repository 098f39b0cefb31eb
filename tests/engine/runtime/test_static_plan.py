"""Static int8 of a transformer: what is quantized, the mask kept out, every calibration works, NaN scales refused."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

import squeezelab as sl
from squeezelab.engine.runtime.static_plan import check_quantization_parameters, mask_path, static_plan
from squeezelab.engine.zoo import tiny_bert, tiny_bert_inputs


@pytest.fixture(scope="module")
def bert_export():
    model, inputs = tiny_bert(seed=0), tiny_bert_inputs(batch=2, seq=8)
    c = sl.compress(model, example_inputs=inputs, output="last_hidden_state")
    return model, c.onnx_bytes


def test_the_attention_masks_path_is_found_and_kept_float(bert_export):
    _, onnx_bytes = bert_export
    graph = onnx.load_from_string(onnx_bytes).graph
    path = set(mask_path(graph))
    by_name = {n.name: n for n in graph.node}
    ops = {by_name[name].op_type for name in path}
    assert {"Where", "Softmax"} <= ops or {"Sub", "Softmax"} <= ops  # the mask's arithmetic, and where it ends
    softmax_inputs = {n.input[0] for n in graph.node if n.op_type == "Softmax"}
    adders = [n for n in graph.node if n.output[0] in softmax_inputs or n.name in path and n.op_type == "Add"]
    assert adders and all(n.name in path for n in adders)  # the Add of the scores and the mask is kept out
    embedding_lookups = [n.name for n in graph.node if n.op_type == "Gather" and "embeddings" in n.name and "word" in n.name]
    assert embedding_lookups and not path & set(embedding_lookups)  # ids -> activations: not mask


def test_a_transformer_plan_quantizes_matmul_inputs_only(bert_export):
    _, onnx_bytes = bert_export
    plan = static_plan(onnx_bytes, None, transformer=True)
    assert plan.op_types == ("MatMul", "Gemm") and plan.kind == "transformer"
    assert plan.extra_options == {"OpTypesToExcludeOutputQuantization": ["MatMul", "Gemm"]}
    assert len(plan.embedding_gathers) == 3  # word, position and token type tables
    cnn = static_plan(onnx_bytes, None, transformer=False)
    assert cnn.op_types is None and cnn.extra_options == {}


@pytest.mark.parametrize("calibration", ["minmax", "percentile", "entropy"])
def test_static_int8_of_a_bert_works_with_every_calibration(calibration):
    model = tiny_bert(seed=0)
    inputs = tiny_bert_inputs(batch=40, seq=12, seed=3)
    calib, test = ({k: v[:32] for k, v in inputs.items()}, {k: v[32:] for k, v in inputs.items()})
    c = sl.compress(model, sl.Recipe(runtime=sl.Int8Static(calibration=calibration), transforms=()),
                    example_inputs=calib, calibration_data=calib, output="last_hidden_state")
    graph = onnx.load_from_string(c.onnx_bytes).graph
    quantized = {n.input[0] for n in graph.node if n.op_type == "QuantizeLinear"}
    mask = {n.output[0] for n in graph.node if n.op_type == "Where"} | {n.input[0] for n in graph.node if n.op_type == "Softmax"}
    assert quantized and not quantized & mask  # neither the mask nor the masked scores have a calibrated range
    matmul_outputs = {n.output[0] for n in graph.node if n.op_type == "MatMul"}
    assert not quantized & matmul_outputs  # a Linear's output keeps float precision (the [CLS] outliers)
    choices = c.details["choices"]
    assert choices["graph"] == "transformer" and choices["embedding_tables_int8"] == 3
    got = c.predict({k: v.numpy() for k, v in test.items()})
    with torch.no_grad():
        reference = model(**test).last_hidden_state.numpy()
    cos = np.sum(got * reference, -1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(reference, axis=-1))
    mask = test["attention_mask"].numpy().astype(bool)
    assert np.isfinite(got).all() and cos[mask].mean() > 0.98  # real tokens; int8 noise only (a NaN scale gives NaN)


def _qdq_graph(scale: float) -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    inits = [helper.make_tensor("x_scale", TensorProto.FLOAT, [], [scale]),
             helper.make_tensor("x_zero_point", TensorProto.UINT8, [], [0])]
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero_point"], ["q"], name="q_node"),
             helper.make_node("DequantizeLinear", ["q", "x_scale", "x_zero_point"], ["y"], name="dq_node")]
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.mark.parametrize("scale", [float("nan"), float("inf"), 0.0])
def test_a_written_model_with_a_bad_scale_is_refused_naming_the_tensor(scale):
    with pytest.raises(sl.errors.QuantizationError, match="x_scale"):
        check_quantization_parameters(_qdq_graph(scale), "int8-static")
    check_quantization_parameters(_qdq_graph(0.1), "int8-static")  # a finite, positive scale passes
