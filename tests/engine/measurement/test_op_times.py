"""op_times(): where an ONNX model's time goes, by op type, from ONNX Runtime's own profiler.

Oracles: the graph's node counts (every executed node is counted once per run, the warm-up run left
out), the op types int8 quantization writes, and the float layers a recipe keeps. No time is asserted
beyond being positive (CPUs differ).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from torch import nn

import squeezelab as sl
from squeezelab.engine.core.errors import ConfigError
from squeezelab.engine.measurement.op_times import op_times, time_split


@pytest.fixture(scope="module")
def static_int8(digits_cnn):
    model, split = digits_cnn
    common = {"example_inputs": split.x_test[:1], "calibration_data": split.x_train[:128]}
    first_conv = next(name for name, m in model.named_modules() if isinstance(m, nn.Conv2d))
    return {
        "fp32": sl.compress(model, sl.Recipe(), **common),
        "int8": sl.compress(model, sl.Recipe(runtime=sl.Int8Static()), **common),
        "mixed": sl.compress(model, sl.Recipe(runtime=sl.Int8Static(), layers=(sl.LayerSetting(name=first_conv, bits=32),)), **common),
    }, split


def test_fp32_time_is_all_float_and_counts_each_node_once_per_run(static_int8):
    built, split = static_int8
    table = op_times(built["fp32"], split.x_test[:32], runs=1, warmup=2)  # three runs made: the warm-up left out
    assert list(table.columns) == ["op_type", "nodes", "ms", "share", "kind", "provider"]
    assert set(table["kind"]) == {"float"} and (table["ms"] >= 0).all()
    # The profiler counts whole microseconds: a Flatten (no copy) may read 0 on a fast CPU, a Conv never does.
    assert (table.loc[table["op_type"] == "Conv", "ms"] > 0).all()
    assert table["share"].sum() == pytest.approx(1.0) and table["ms"].is_monotonic_decreasing
    graph_convs = Counter(n.op_type for n in onnx.load_from_string(built["fp32"].onnx_bytes).graph.node)["Conv"]
    assert int(table.loc[table["op_type"] == "Conv", "nodes"].sum()) == graph_convs == 2
    assert time_split(table) == {"int8": 0.0, "quantize": 0.0, "weight-only": 0.0, "float": pytest.approx(1.0)}


def test_static_int8_time_is_in_int8_kernels_and_a_float_layer_shows_with_its_conversions(static_int8):
    built, split = static_int8
    int8 = op_times(built["int8"], split.x_test[:32], runs=2)
    assert "QLinearConv" in set(int8["op_type"]) and "Conv" not in set(int8["op_type"])
    assert set(int8.loc[int8["op_type"] == "QLinearConv", "kind"]) == {"int8"}
    assert time_split(int8)["int8"] > 0.5
    mixed = op_times(built["mixed"], split.x_test[:32], runs=2)
    float_convs = mixed[(mixed["op_type"] == "Conv") & (mixed["kind"] == "float")]
    assert int(float_convs["nodes"].sum()) == 1  # the layer kept float runs as a float Conv
    split_mixed = time_split(mixed)
    assert split_mixed["float"] > 0 and split_mixed["quantize"] > 0 and sum(split_mixed.values()) == pytest.approx(1.0)


def test_onnx_bytes_take_feeds_by_name(static_int8):
    built, split = static_int8
    c = built["int8"]
    table = op_times(c.onnx_bytes, c.prepare(split.x_test[:8]), runs=1)
    assert "QLinearConv" in set(table["op_type"])


def test_bad_arguments_are_refused_before_any_run(static_int8, digits_cnn):
    built, split = static_int8
    with pytest.raises(ConfigError, match="runs=0"):
        op_times(built["int8"], split.x_test[:4], runs=0)
    with pytest.raises(ConfigError, match="warmup=-1"):
        op_times(built["int8"], split.x_test[:4], warmup=-1)
    with pytest.raises(ConfigError, match="dict of arrays"):
        op_times(built["int8"].onnx_bytes, np.zeros((4, 1, 8, 8), np.float32))
    with pytest.raises(ConfigError, match="read_bytes"):
        op_times("model.onnx", {"input": np.zeros((4, 1, 8, 8), np.float32)})
    model, _ = digits_cnn
    simulated = sl.compress(model, sl.Recipe(quantization=sl.LinearQuantization(bits=4), runtime=sl.Simulated()),
                            example_inputs=split.x_test[:1])
    with pytest.raises(ConfigError, match="no ONNX graph"):
        op_times(simulated, split.x_test[:4])


def test_weight_only_kernels_are_their_own_kind(digits_mlp):
    model, split = digits_mlp
    c = sl.compress(model, sl.Recipe(runtime=sl.WeightOnly(bits=4, block_size=16)), example_inputs=split.x_test[:1])
    table = op_times(c, split.x_test[:32], runs=2)
    assert set(table.loc[table["op_type"] == "MatMulNBits", "kind"]) == {"weight-only"}
    assert time_split(table)["weight-only"] > 0 and time_split(table)["int8"] == 0.0


def test_a_profile_whose_runs_cannot_be_counted_is_refused():
    from squeezelab.engine.core.errors import ProviderError
    from squeezelab.engine.measurement.op_times import _after_warmup

    events = [{"cat": "Session", "name": "model_run", "ts": 0}, {"cat": "Node", "name": "a_kernel_time", "ts": 1}]
    with pytest.raises(ProviderError, match="1 model_run events where 4 runs"):
        _after_warmup(events, warmup=3, runs=1)
    assert _after_warmup(events, warmup=0, runs=1) == events
