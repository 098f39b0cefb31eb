"""GPTQ weights in MatMulNBits, against oracles: ONNX Runtime's own quantizer and kernel, numpy, and round to nearest.

Oracles: ONNX Runtime's C++ block quantizer (our round-to-nearest codes, scales and zero points must be its
bytes), its ``MatMulNBits`` kernel (a GPTQ model must compute x @ our dequantized weights), numpy's X^T X
(the moments read from a graph), and round to nearest itself (GPTQ's layer-output error on the calibration
data must be well below it: the algorithm's defining property; with uncorrelated inputs it must equal it).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.capi._pybind_state import quantize_matmul_4bits, quantize_matmul_8bits
from torch import nn

import squeezelab as sl
from squeezelab.engine.core.errors import CalibrationError
from squeezelab.engine.core.recipe import Recipe
from squeezelab.engine.core.runtimes import WeightOnly
from squeezelab.engine.runtime import hessians
from squeezelab.engine.runtime.gptq import GptqSettings, gptq_blocks
from squeezelab.engine.runtime.gptq_graph import gptq_eligible, gptq_matmuls
from squeezelab.engine.runtime.hessians import collect_hessians
from squeezelab.engine.runtime.nbits import BlockQuantized, matmul_nbits_node, pack, rtn_blocks
from squeezelab.engine.runtime.weight_only import quantize_weight_only_onnx


def _weight(k: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((k, n)) * rng.uniform(0.05, 2.0, n)).astype(np.float32)
    w[:, 0] = 0.0  # an all-zero column: scale 0, ONNX Runtime's special case
    w[:, 1] = np.abs(w[:, 1])  # all positive: the range's low end is clamped to 0
    return w


def _ort_blocks(w: np.ndarray, bits: int, block: int, symmetric: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ONNX Runtime's own C++ block quantizer (what DefaultWeightOnlyQuantizer calls): B, scales, zero points."""
    k, n = w.shape
    k_blocks, per_byte = -(-k // block), 8 // bits
    packed = np.zeros((n, k_blocks, block // per_byte), np.uint8)
    zero = np.zeros((n, -(-k_blocks // per_byte)), np.uint8)
    scales = np.zeros((n, k_blocks), np.float32)
    padded = np.pad(w, ((0, k_blocks * block - k), (0, 0)))
    (quantize_matmul_4bits if bits == 4 else quantize_matmul_8bits)(packed, padded, scales, zero, block, n, k, symmetric)
    return packed, scales, zero


def _matmul_model(w: np.ndarray, *, second_input: bool = False) -> onnx.ModelProto:
    """x (B, K) @ W [and y (B, K) @ W, the same stored weight]: the smallest graphs a weight-only quantizer takes."""
    k, n = w.shape
    nodes = [helper.make_node("MatMul", ["x", "W"], ["out"], name="mm")]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", k])]
    outputs = [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", n])]
    if second_input:
        nodes.append(helper.make_node("MatMul", ["y", "W"], ["out2"], name="mm2"))
        inputs.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", k]))
        outputs.append(helper.make_tensor_value_info("out2", TensorProto.FLOAT, ["batch", n]))
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(w, "W")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto | bytes, feeds: dict) -> list[np.ndarray]:
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)


def _correlated_inputs(rows: int, k: int, seed: int) -> np.ndarray:
    """Inputs whose channels share a few strong factors and differ in scale, as a transformer's activations do."""
    rng = np.random.default_rng(seed)
    factors = rng.standard_normal((rows, 8)) @ rng.standard_normal((8, k)) * 2.0
    x = (factors + rng.standard_normal((rows, k))) * rng.uniform(0.2, 3.0, k)
    return x.astype(np.float32)


# --------------------------------------------------------------------------- the layout: ONNX Runtime's bytes


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize(("k", "n", "block"), [(64, 48, 32), (96, 40, 16), (80, 24, 32), (50, 8, 16)])
def test_round_to_nearest_packs_to_onnx_runtimes_own_bytes(bits, symmetric, k, n, block):
    w = _weight(k, n, seed=k + n)
    blob, scales, zero = pack(rtn_blocks(w, bits, block, symmetric))
    ort_blob, ort_scales, ort_zero = _ort_blocks(w, bits, block, symmetric)
    assert blob.tobytes() == ort_blob.tobytes()  # K=80, 50: a short last block, padded as ONNX Runtime pads it
    assert scales.tobytes() == ort_scales.tobytes()
    if symmetric:
        assert zero is None  # no zero-point input: the kernel centres on 2**(bits-1)
    else:
        assert zero.tobytes() == ort_zero.tobytes()


@pytest.mark.parametrize("symmetric", [False, True])
def test_our_matmul_nbits_node_is_onnx_runtimes_node(symmetric):
    w, x = _weight(80, 24, seed=5), np.random.default_rng(6).standard_normal((7, 80)).astype(np.float32)
    model = _matmul_model(w)
    theirs_bytes, _ = quantize_weight_only_onnx(
        model.SerializeToString(), WeightOnly(method="rtn", symmetric=symmetric, compute="float"))
    theirs = onnx.load_from_string(theirs_bytes)
    node, inits = matmul_nbits_node(model.graph.node[0], "W", rtn_blocks(w, 4, 32, symmetric), accuracy_level=0)
    ours = {i.name: numpy_helper.to_array(i) for i in inits}
    expected = {i.name: numpy_helper.to_array(i) for i in theirs.graph.initializer}
    assert ours.keys() == expected.keys()
    for name, array in ours.items():
        assert array.dtype == expected[name].dtype and array.shape == expected[name].shape
        assert array.tobytes() == expected[name].tobytes(), name
    their_node = next(n for n in theirs.graph.node if n.op_type == "MatMulNBits")
    assert {a.name: helper.get_attribute_value(a) for a in node.attribute} == {
        a.name: helper.get_attribute_value(a) for a in their_node.attribute
    }
    model.graph.ClearField("node")
    model.graph.node.append(node)
    model.graph.ClearField("initializer")
    model.graph.initializer.extend(inits)
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    assert np.array_equal(_run(model, {"x": x})[0], _run(theirs, {"x": x})[0])  # the same kernel on the same bytes


# --------------------------------------------------------------------------- GPTQ, the algorithm


def test_gptq_with_uncorrelated_equal_inputs_is_round_to_nearest():
    w = _weight(96, 40, seed=1)
    for symmetric in (False, True):
        rtn = rtn_blocks(w, 4, 32, symmetric)
        same = gptq_blocks(w, np.eye(96) * 3.0, bits=4, block_size=32, symmetric=symmetric)
        assert np.array_equal(same.codes, rtn.codes) and np.array_equal(same.scales, rtn.scales)
        assert np.array_equal(same.zero_points, rtn.zero_points)


@pytest.mark.parametrize(("bits", "symmetric", "act_order"), [
    (4, False, True), (4, False, False), (4, True, True), (8, False, True),
])
def test_gptq_layer_output_error_is_well_below_round_to_nearest(bits, symmetric, act_order):
    k, n = 128, 48
    w = (np.random.default_rng(2).standard_normal((k, n)) * 0.1).astype(np.float32)
    x = _correlated_inputs(2048, k, seed=3)  # fixed calibration data
    h = x.astype(np.float64).T @ x
    settings = GptqSettings(act_order=act_order)
    gptq = gptq_blocks(w, h, bits=bits, block_size=32, symmetric=symmetric, settings=settings)
    rtn = rtn_blocks(w, bits, 32, symmetric)
    error = lambda q: float(np.mean((x @ w - x @ q.dequantized()) ** 2))  # noqa: E731
    assert error(gptq) <= 0.8 * error(rtn)
    # GPTQ writes what the kernel reads: codes within the width, one scale and zero point per block
    assert gptq.codes.max() <= 2**bits - 1 and gptq.scales.shape == (n, k // 32) and np.isfinite(gptq.scales).all()


def test_gptq_leaves_its_arguments_alone_and_handles_dead_inputs():
    w = _weight(64, 16, seed=4)
    x = _correlated_inputs(512, 64, seed=4)
    x[:, 5] = 0.0  # an input that is always 0: H[5, 5] = 0
    h = x.astype(np.float64).T @ x
    w_before, h_before = w.copy(), h.copy()
    q = gptq_blocks(w, h, bits=4, block_size=16, symmetric=False)
    assert np.array_equal(w, w_before) and np.array_equal(h, h_before)
    assert np.isfinite(q.dequantized()).all()
    assert np.mean((x @ w - x @ q.dequantized()) ** 2) < np.mean((x @ w - x @ rtn_blocks(w, 4, 16, False).dequantized()) ** 2)


# --------------------------------------------------------------------------- moments read from a graph


def _masked_model(w: np.ndarray) -> onnx.ModelProto:
    """h (B, S, K) @ W, then multiplied by the attention mask (B, S): a graph with a padding mask input."""
    k, n = w.shape
    nodes = [
        helper.make_node("MatMul", ["h", "W"], ["p"], name="mm"),
        helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["m", "axis"], ["m3"]),
        helper.make_node("Mul", ["p", "m3"], ["out"]),
    ]
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.array([-1], np.int64), "axis")]
    graph = helper.make_graph(nodes, "g", [
        helper.make_tensor_value_info("h", TensorProto.FLOAT, ["b", "s", k]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["b", "s"]),
    ], [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["b", "s", n])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _masked_feeds() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(7)
    feeds = []
    for _ in range(3):
        mask = (np.arange(6)[None, :] < rng.integers(2, 7, (4, 1))).astype(np.int64)  # (4, 6): rows padded at the end
        feeds.append({"h": rng.standard_normal((4, 6, 16)).astype(np.float32), "attention_mask": mask})
    return feeds


def test_moments_are_x_transpose_x_of_the_rows_the_padding_mask_keeps(monkeypatch):
    model, feeds = _masked_model(_weight(16, 8, seed=8)), _masked_feeds()
    before = model.SerializeToString()
    rows = np.concatenate([f["h"][f["attention_mask"].astype(bool)] for f in feeds]).astype(np.float64)
    moments, mask = collect_hessians(model, ["h"], feeds)
    assert mask == "attention_mask" and moments["h"].rows == len(rows) < 3 * 4 * 6
    np.testing.assert_allclose(moments["h"].xtx, rows.T @ rows, rtol=1e-10)
    assert model.SerializeToString() == before  # the caller's graph is not changed
    # a computed tensor (the MatMul's output, read as an extra graph output) and a batch run in slices agree
    monkeypatch.setattr(hessians, "_BUDGET_BYTES", 1)
    sliced, _ = collect_hessians(model, ["p"], feeds)
    p = np.concatenate([(f["h"] @ _weight(16, 8, seed=8))[f["attention_mask"].astype(bool)] for f in feeds]).astype(np.float64)
    np.testing.assert_allclose(sliced["p"].xtx, p.T @ p, rtol=1e-4)


# --------------------------------------------------------------------------- GPTQ in a graph


def _unpack(graph: onnx.GraphProto, node: onnx.NodeProto) -> np.ndarray:
    """The float weight (K, N) a 4-bit asymmetric MatMulNBits node multiplies by, read back from its initializers."""
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    k, n, block = attrs["K"], attrs["N"], attrs["block_size"]
    blob, scales, zero = (inits[name] for name in node.input[1:4])
    codes = np.stack([blob & 15, blob >> 4], axis=-1).reshape(n, -1)[:, :k].astype(np.float32)
    zeros = np.stack([zero & 15, zero >> 4], axis=-1).reshape(n, -1)[:, : scales.shape[1]].astype(np.float32)
    per_k = np.arange(k) // block
    return ((codes - zeros[:, per_k]) * scales[:, per_k]).T


def test_gptq_graph_computes_x_times_our_dequantized_weights_and_shares_a_shared_weight():
    w = _weight(96, 40, seed=9)
    model = _matmul_model(w, second_input=True)
    rng = np.random.default_rng(10)
    feeds = [{"x": _correlated_inputs(32, 96, seed=11 + i), "y": rng.standard_normal((32, 96)).astype(np.float32)} for i in range(2)]
    out, facts = gptq_matmuls(model, gptq_eligible(model.graph, ["mm", "mm2"]), feeds, bits=4, block_size=32,
                              symmetric=False, accuracy_level=0)
    assert facts["gptq_matmuls"] == 2 and facts["gptq_calibration_rows"] == 64 and facts["gptq_padding_mask"] is None
    onnx.checker.check_model(out)
    nodes = [n for n in out.graph.node if n.op_type == "MatMulNBits"]
    assert len(nodes) == 2 and list(nodes[0].input[1:]) == list(nodes[1].input[1:])  # one stored weight, both users
    assert not any(i.name == "W" for i in out.graph.initializer)  # the float weight is gone
    x = rng.standard_normal((5, 96)).astype(np.float32)
    y = rng.standard_normal((5, 96)).astype(np.float32)
    dequantized = _unpack(out.graph, nodes[0])
    got = _run(out, {"x": x, "y": y})
    np.testing.assert_allclose(got[0], x @ dequantized, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[1], y @ dequantized, rtol=1e-5, atol=1e-5)
    # the weights are fitted to both inputs' moments together: not round to nearest's
    assert not np.array_equal(dequantized, rtn_blocks(w, 4, 32, False).dequantized())


# --------------------------------------------------------------------------- WeightOnly, compress


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)).eval()


def _x(n: int, seed: int) -> np.ndarray:
    return _correlated_inputs(n, 64, seed)


def test_weight_only_defaults():
    rt = WeightOnly()
    assert (rt.bits, rt.block_size, rt.method, rt.symmetric, rt.embeddings, rt.compute) == (4, 32, "auto", False, None, None)
    assert rt.reads_calibration and WeightOnly(method="gptq").reads_calibration and not WeightOnly(method="rtn").reads_calibration


def test_gptq_without_calibration_data_is_refused_before_the_export(monkeypatch):
    import squeezelab.engine.pipeline.compress as compress_module

    def no_export(*args, **kwargs):
        raise AssertionError("exported before the calibration check")

    monkeypatch.setattr(compress_module, "export_onnx", no_export)
    with pytest.raises(CalibrationError) as info:
        sl.compress(_mlp(), Recipe(runtime=WeightOnly(method="gptq")), example_inputs=_x(2, 0))
    for word in ("method='gptq'", "calibration_data=None", "calibration_data=", "method='auto'", "method='rtn'"):
        assert word in str(info.value)


def test_auto_is_gptq_with_calibration_data_and_round_to_nearest_without():
    net, drawn = _mlp(), _x(320, 1)
    calibration, x = drawn[:256], drawn[256:]  # held out, from the same distribution
    fp32 = sl.compress(net, example_inputs=x[:1])
    auto = sl.compress(net, Recipe(runtime=WeightOnly(compute="float")), example_inputs=x[:1], calibration_data=calibration)
    plain = sl.compress(net, Recipe(runtime=WeightOnly(compute="float")), example_inputs=x[:1])
    assert auto.details["weight_only_method"] == "gptq" and plain.details["weight_only_method"] == "rtn"
    assert auto.details["weight_only_method_reason"] == "gptq: calibrated on 256 samples"
    assert plain.details["weight_only_method_reason"].startswith("rtn: no calibration data given")
    gptq = auto.details["weight_only_gptq"]
    assert gptq["act_order"] is True and gptq["percdamp"] == 0.01 and gptq["gptq_calibration_samples"] == 256
    assert len(auto.onnx_bytes) == len(plain.onnx_bytes)  # the same layout, other codes
    reference = fp32.predict(x)
    error = lambda c: float(np.mean((c.predict(x) - reference) ** 2))  # noqa: E731
    assert error(auto) < 0.8 * error(plain)


def test_gptq_on_an_onnx_file(tmp_path):
    net, calibration = _mlp(), _x(128, 3)
    path = tmp_path / "mlp.onnx"
    sl.compress(net, example_inputs=calibration[:1]).save(path)
    source = path.read_bytes()
    c = sl.compress(path, Recipe(runtime=WeightOnly(method="gptq", bits=8)), example_inputs=calibration[:1],
                    calibration_data=calibration)
    assert path.read_bytes() == source and c.details["weight_only_method"] == "gptq" and c.details["matmul_nbits_nodes"] == 2
    with torch.no_grad():
        expected = net(torch.from_numpy(calibration)).numpy()
    np.testing.assert_allclose(c.predict(calibration), expected, atol=0.05 * np.abs(expected).max())


def test_sweeps_refuse_gptq_without_calibration_data_and_key_its_results_by_it(tmp_path):
    from squeezelab.engine.explore.evaluation import Evaluator, check_calibration

    with pytest.raises(CalibrationError, match="method='gptq'.*calibration_data=None"):
        check_calibration(Recipe(runtime=WeightOnly(method="gptq")), None)
    check_calibration(Recipe(runtime=WeightOnly()), None)  # "auto" runs without: round to nearest
    net, x = _mlp(), _x(40, 4)
    data = (x[:16], None)
    one, other = (Evaluator(net, data, calibration_data=c, cache=tmp_path) for c in (x[16:28], x[28:]))
    for runtime, shared in ((WeightOnly(), False), (WeightOnly(method="gptq"), False), (WeightOnly(method="rtn"), True)):
        assert (one.key(Recipe(runtime=runtime)) == other.key(Recipe(runtime=runtime))) == shared


def test_cli_refuses_a_gptq_recipe_without_calibration_in_its_own_words(tmp_path, capsys):
    from squeezelab.cli import main

    path = tmp_path / "mlp.onnx"
    sl.compress(_mlp(), example_inputs=_x(1, 0)).save(path)
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(Recipe(runtime=WeightOnly(method="gptq")).to_toml())
    with pytest.raises(SystemExit) as info:
        main(["compress", str(path), "--recipe", str(recipe), "--output", str(tmp_path / "out.onnx")])
    err = capsys.readouterr().err
    assert info.value.code == 2 and len(err.strip().splitlines()) == 1
    for word in ("weightonly4-b32-gptq", "--calibration CAL.npz", "method = 'auto'"):
        assert word in err
    assert not (tmp_path / "out.onnx").exists()
