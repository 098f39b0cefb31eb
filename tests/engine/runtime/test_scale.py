"""Cost that grows like the model (issue #24): the faster quantizer and fusion give ONNX Runtime's own files,
each stage of compress is recorded, and a model past ONNX's 2 GB limit is exported as a file with its weights beside
it (the rest of that path: test_external_data.py)."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers.optimizer import optimize_model

import squeezelab as sl
from squeezelab.engine.core.inputs import Inputs
from squeezelab.engine.core.outputs import SelectedOutput
from squeezelab.engine.runtime.bert_fusion import optimize_bert, weightless_view
from squeezelab.engine.runtime.dynamic_int8 import per_channel_int8, quantize_dynamic_file
from squeezelab.engine.runtime.export import export_onnx
from squeezelab.engine.runtime.external_data import OnnxFile, load_proto
from squeezelab.engine.runtime.int8_graph import attention_shape
from squeezelab.engine.runtime.ort_tools import quiet_onnxruntime_tools
from squeezelab.engine.runtime.size_limit import protobuf_limit
from squeezelab.engine.runtime.stages import is_recording, recording, stage
from squeezelab.engine.zoo import tiny_bert, tiny_bert_inputs


@pytest.fixture(scope="module")
def bert_export() -> bytes:
    example = Inputs.of(tiny_bert_inputs(batch=2, seq=8))
    spec = example.spec()
    return export_onnx(SelectedOutput(tiny_bert(), spec.kind, spec.names), example)


def _mlp_with_a_zero_channel() -> bytes:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(24, 16), torch.nn.ReLU(), torch.nn.Linear(16, 6))
    with torch.no_grad():
        net[0].weight[3].zero_()  # a channel whose range is 0: ONNX Runtime's scale-1 fallback
        net[2].weight[:, 5] *= 40.0  # one wide input column
    return export_onnx(net, Inputs.of(torch.randn(4, 24)))


@pytest.mark.parametrize("per_channel,reduce_range,symmetric", list(itertools.product([True, False], [True, False], [None, False])))
def test_the_vectorised_quantizer_writes_onnx_runtimes_file_byte_for_byte(bert_export, tmp_path, per_channel,
                                                                          reduce_range, symmetric):
    extra = {} if symmetric is None else {"WeightSymmetric": symmetric}
    for name, model in (("bert", bert_export), ("mlp", _mlp_with_a_zero_channel())):
        source, theirs, ours = tmp_path / f"{name}.onnx", tmp_path / f"{name}.ort.onnx", tmp_path / f"{name}.ours.onnx"
        source.write_bytes(model)
        with quiet_onnxruntime_tools():
            quantize_dynamic(onnx.load_from_string(model), theirs, op_types_to_quantize=["MatMul", "Gemm", "Gather"],
                             per_channel=per_channel, reduce_range=reduce_range, weight_type=QuantType.QInt8,
                             extra_options=dict(extra))
            quantize_dynamic_file(source, ours, op_types=["MatMul", "Gemm", "Gather"], per_channel=per_channel,
                                  reduce_range=reduce_range, extra_options=dict(extra))
        assert ours.read_bytes() == theirs.read_bytes(), name


def test_per_channel_codes_follow_onnx_runtimes_scalar_formula():
    from onnxruntime.quantization.quant_utils import get_qmin_qmax_for_qType, quantize_data

    rng = np.random.default_rng(0)
    weights = rng.normal(size=(5, 7)).astype(np.float32)
    weights[:, 2] = 0.0  # an all-zero channel along axis 1
    qmin, qmax = get_qmin_qmax_for_qType(onnx.TensorProto.INT8, False, symmetric=True)
    zero_points, scales, codes = per_channel_int8(weights, 1, qmin, qmax, symmetric=True)
    for c in range(weights.shape[1]):
        zp, scale, q = quantize_data(weights[:, c].flatten(), onnx.TensorProto.INT8, True)
        assert zero_points[c] == zp and scales[c] == scale and np.array_equal(codes[:, c], q)
    assert codes.dtype == np.int8 and scales.dtype == np.float32 and scales[2] == 1.0


def test_fusion_without_weight_copies_gives_onnx_runtimes_fused_graph(bert_export):
    heads, hidden = attention_shape(bert_export)
    with quiet_onnxruntime_tools():
        theirs = optimize_model(onnx.load_from_string(bert_export), model_type="bert", num_heads=heads,
                                hidden_size=hidden, opt_level=0)
        ours = optimize_bert(onnx.load_from_string(bert_export), heads, hidden)
    assert ours.model.SerializeToString() == theirs.model.SerializeToString()
    assert ours.get_fused_operator_statistics()["Attention"] == 2  # it fused: the comparison is not of two no-ops


def test_the_weightless_view_keeps_shapes_and_small_constants_only(bert_export):
    model = onnx.load_from_string(bert_export)
    view = weightless_view(model)
    big = {t.name: list(t.dims) for t in model.graph.initializer if len(t.dims) >= 2 and np.prod(t.dims) >= 4096}
    assert big and not big.keys() & {t.name for t in view.graph.initializer}
    inputs = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in view.graph.input}
    assert all(inputs[name] == dims for name, dims in big.items())
    assert len(view.graph.initializer) + len(big) == len(model.graph.initializer)
    assert view.ByteSize() < model.ByteSize() / 4


def test_compress_records_each_stage_with_its_time_and_memory():
    result = sl.compress(tiny_bert(), sl.Recipe(runtime=sl.Int8Dynamic()), example_inputs=tiny_bert_inputs(batch=2, seq=8))
    stages = {row["stage"]: row for row in result.details["stages"]}
    assert {"check", "export", "check_export", "convert", "convert.fusion", "convert.quantize", "verify"} <= set(stages)
    assert all(row["wall_s"] >= 0 and row["peak_rss_bytes"] >= row["rss_end_bytes"] > 0 for row in stages.values())
    assert stages["convert"]["wall_s"] >= stages["convert.quantize"]["wall_s"]  # the nested stage is inside it
    assert result.details["peak_rss_bytes"] == max(row["peak_rss_bytes"] for row in stages.values())
    assert not is_recording()  # the recording ended with compress


def test_stages_outside_a_recording_record_nothing_and_nested_recordings_share_one():
    with stage("alone"):
        pass
    with recording() as outer:
        with recording() as inner, stage("a"), stage("b"), stage("c"):
            pass
    assert inner is outer and [row["stage"] for row in outer.records] == ["a.b.c", "a.b", "a"]


def test_a_model_past_the_protobuf_limit_is_exported_as_a_file_with_the_same_graph_and_weights():
    net, example = torch.nn.Sequential(torch.nn.Linear(64, 64)), Inputs.of(torch.randn(2, 64))  # 16,640 bytes
    whole = export_onnx(net, example)
    with protobuf_limit(10_000):
        large = export_onnx(net, example)
    # the weight matrix in the data file; the bias (256 bytes, under the 1 kB threshold) stays in the graph
    assert isinstance(large, OnnxFile) and (large.path.parent / "model.onnx.data").stat().st_size == 64 * 64 * 4
    one, other = onnx.load_from_string(whole), load_proto(large)
    assert [n.SerializeToString() for n in one.graph.node] == [n.SerializeToString() for n in other.graph.node]
    assert [numpy_helper.to_array(t).tobytes() for t in one.graph.initializer] == [
        numpy_helper.to_array(t).tobytes() for t in other.graph.initializer]


def test_an_onnx_file_past_the_limit_is_read_in_place(tmp_path):
    path = tmp_path / "net.onnx"
    path.write_bytes(export_onnx(torch.nn.Linear(64, 64), Inputs.of(torch.randn(2, 64))))
    before = path.read_bytes()
    with protobuf_limit(10_000):
        fp32 = sl.compress(path, sl.Recipe())
        result = sl.compress(path, sl.Recipe(runtime=sl.Int8Dynamic()))
    assert isinstance(fp32.onnx_bytes, OnnxFile) and fp32.onnx_bytes.path == path  # the caller's file, read in place
    assert result.executable and not isinstance(result.onnx_bytes, OnnxFile)  # 4 kB of int8 weights: bytes again
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["net.onnx"]


def test_the_export_given_the_output_rank_is_the_same_graph(bert_export):
    example = Inputs.of(tiny_bert_inputs(batch=2, seq=8))
    spec = example.spec()
    assert export_onnx(SelectedOutput(tiny_bert(), spec.kind, spec.names), example, output_rank=3) == bert_export


def test_fusion_written_straight_to_a_file_quantizes_to_the_same_model_as_through_bytes():
    from squeezelab.engine.runtime.int8_graph import remembered_fusion

    recipe, example = sl.Recipe(runtime=sl.Int8Dynamic()), tiny_bert_inputs(batch=2, seq=8)
    direct = sl.compress(tiny_bert(), recipe, example_inputs=example)
    with remembered_fusion():  # a search's way: the fused graph as bytes, kept for the next quantization
        through_bytes = sl.compress(tiny_bert(), recipe, example_inputs=example)
    assert direct.details["choices"]["fusion"] is True
    assert direct.onnx_bytes == through_bytes.onnx_bytes
