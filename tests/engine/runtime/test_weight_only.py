"""Executable 4/8-bit weight-only models (ONNX Runtime's MatMulNBits), against the fp32 model as oracle.

Oracles: the fp32 PyTorch model's output (cosine at a stated bound: 4-bit blocks of 32 on these small
seeded models lose little), the original graph's output for the Gemm -> MatMul rewrite (float tolerance),
and the quantized graph's own facts (op counts, bits and block-size attributes, sizes).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import squeezelab as sl
from squeezelab.engine.core.cpu import default_weight_only_compute
from squeezelab.engine.core.errors import ConfigError
from squeezelab.engine.runtime.export import export_onnx
from squeezelab.engine.core.inputs import Inputs
from squeezelab.engine.core.recipe import Recipe
from squeezelab.engine.core.runtimes import WeightOnly
from squeezelab.engine.runtime.weight_only import gemm_to_matmul
from squeezelab.engine.zoo import tiny_bert, tiny_bert_inputs


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 96), nn.ReLU(), nn.Linear(96, 10)).eval()


def _x(n: int = 32) -> torch.Tensor:
    return torch.randn(n, 64, generator=torch.Generator().manual_seed(1))


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _nodes(c, op_type: str):
    return [n for n in onnx.load_from_string(c.onnx_bytes).graph.node if n.op_type == op_type]


def _attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


@pytest.fixture(scope="module")
def bert():
    model = tiny_bert(seed=0)
    inputs = {k: v.numpy() for k, v in tiny_bert_inputs(batch=16, seq=12, seed=1).items()}
    with torch.no_grad():
        expected = model(**{k: torch.from_numpy(v) for k, v in inputs.items()}).last_hidden_state.numpy()
    return model, inputs, expected


# --------------------------------------------------------------------------- the config


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"bits": 3}, ["bits=3", "4 or 8", "Simulated"]),
        ({"bits": True}, ["bits=True", "4 or 8"]),
        ({"block_size": 48}, ["block_size=48", "16, 32, 64, 128"]),
        ({"method": "k_quant"}, ["'k_quant'", "Neural Compressor", "'auto', 'rtn', 'gptq', 'hqq'"]),
        ({"method": "awq"}, ["'awq'", "not supported", "'auto', 'rtn', 'gptq', 'hqq'"]),
        ({"method": None}, ["method=None", "not supported", "'auto'"]),
        ({"method": "hqq", "symmetric": True}, ["hqq", "symmetric=True", "symmetric=False"]),
        ({"method": "hqq", "bits": 8}, ["hqq", "bits=8", "no CPU kernel", "method='rtn'"]),
        ({"symmetric": "yes"}, ["symmetric='yes'", "True or False"]),
        ({"embeddings": 8}, ["embeddings=8", "4 bits only", "32", "Int8Dynamic"]),
        ({"embeddings": "float"}, ["embeddings='float'", "None", "32"]),
        ({"compute": "int4"}, ["compute='int4'", "'float'", "'int8'", "accuracy_level=4", "None"]),
        ({"method": "hqq", "compute": "int8"}, ["hqq", "compute='int8'", "float", "method='rtn'"]),
    ],
)
def test_bad_configs_are_refused_naming_what_is_allowed(kwargs, words):
    with pytest.raises(ConfigError) as info:
        WeightOnly(**kwargs)
    for word in words:
        assert word in str(info.value)


def test_config_labels_and_round_trips_through_dict_and_toml():
    rt = WeightOnly(bits=8, block_size=128, method="rtn", symmetric=True, embeddings=4)
    recipe = Recipe(runtime=rt)
    assert recipe.label == "weightonly8-b128-rtn-sym-emb4" and recipe.bits == 8 and recipe.executable
    assert Recipe(runtime=WeightOnly(method="hqq")).label == "weightonly4-b32-hqq"
    int8_compute = Recipe(runtime=WeightOnly(symmetric=True, compute="int8"))
    assert int8_compute.label == "weightonly4-b32-auto-sym-int8compute"
    assert Recipe.from_dict(int8_compute.to_dict()) == int8_compute
    # what None leaves to the machine and the graph is not in the label; a choice made is
    floats = Recipe(runtime=WeightOnly(method="gptq", embeddings=32, compute="float"))
    assert floats.label == "weightonly4-b32-gptq-emb32-floatcompute" and Recipe.from_toml(floats.to_toml()) == floats
    assert Recipe.from_dict(recipe.to_dict()) == recipe
    assert Recipe.from_toml(recipe.to_toml()) == recipe
    with pytest.raises(ConfigError, match="chooses its own weight quantization"):
        Recipe(quantization=sl.LinearQuantization(bits=4), runtime=WeightOnly())


# --------------------------------------------------------------------------- Gemm -> MatMul


def test_gemm_rewrite_computes_what_the_original_graph_computes():
    net, x = _mlp(), _x()
    proto = onnx.load_from_string(export_onnx(net, Inputs.of(x, "x"), opset=17, exporter="torchscript"))
    before = proto.SerializeToString()
    assert [n.op_type for n in proto.graph.node].count("Gemm") == 3  # what makes the rewrite needed
    rewritten, count = gemm_to_matmul(proto)
    assert proto.SerializeToString() == before  # the argument is not changed
    ops = [n.op_type for n in rewritten.graph.node]
    assert count == 3 and "Gemm" not in ops and ops.count("MatMul") == 3 and ops.count("Add") == 3
    onnx.checker.check_model(rewritten)
    feed = {proto.graph.input[0].name: x.numpy()}
    run = lambda m: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    np.testing.assert_allclose(run(rewritten), run(proto), rtol=1e-5, atol=1e-5)
    # no initializer is left behind: the untransposed weights are gone, the transposed ones replace them
    assert sum(len(i.dims) == 2 for i in rewritten.graph.initializer) == 3


def test_gemm_that_is_not_a_linear_layer_stays():
    weight = onnx.numpy_helper.from_array(np.ones((4, 3), np.float32), "W")
    node = onnx.helper.make_node("Gemm", ["A", "W"], ["Y"], alpha=2.0, transB=1)
    graph = onnx.helper.make_graph(
        [node], "g", [onnx.helper.make_tensor_value_info("A", onnx.TensorProto.FLOAT, [2, 3])],
        [onnx.helper.make_tensor_value_info("Y", onnx.TensorProto.FLOAT, [2, 4])], [weight],
    )
    rewritten, count = gemm_to_matmul(onnx.helper.make_model(graph))
    assert count == 0 and [n.op_type for n in rewritten.graph.node] == ["Gemm"]


# --------------------------------------------------------------------------- compress


@pytest.mark.parametrize("runtime", [
    WeightOnly(), WeightOnly(method="hqq"), WeightOnly(bits=8, block_size=64, symmetric=True),
    WeightOnly(compute="int8"), WeightOnly(symmetric=True, compute="float"), WeightOnly(bits=8, compute="int8"),
], ids=lambda r: r.label)
def test_mlp_runs_as_matmul_nbits_close_to_fp32(runtime):
    net, x = _mlp(), _x()
    c = sl.compress(net, Recipe(runtime=runtime), example_inputs=x[:2])
    nbits = _nodes(c, "MatMulNBits")
    assert c.executable and len(nbits) == 3 and not _nodes(c, "Gemm") and not _nodes(c, "MatMul")
    for node in nbits:
        attrs = _attrs(node)
        assert attrs["bits"] == runtime.bits and attrs["block_size"] == runtime.block_size
        assert (len(node.input) == 4) == (not runtime.symmetric)  # zero points only when asymmetric
        assert attrs.get("accuracy_level", 0) == (4 if c.details["weight_only_compute"] == "int8" else 0)  # int8, or left out
    assert c.details["gemm_rewritten_as_matmul"] == 3 and c.details["matmul_nbits_nodes"] == 3
    assert c.details["nbits_weight_fraction"] == 1.0 and c.details["quantized_weight_fraction"] == 1.0
    # without calibration data "auto" is round to nearest; compute=None is this CPU's choice (either, with its reason)
    assert c.details["weight_only_method"] == ("rtn" if runtime.method == "auto" else runtime.method)
    machine = ("float", "hqq has no int8 kernel") if runtime.method == "hqq" else default_weight_only_compute()
    assert c.details["weight_only_compute"] == (runtime.compute or machine[0])
    assert c.details["weight_only_compute_reason"] == ("asked for" if runtime.compute else machine[1])
    assert c.details["weight_only_embeddings"] == 32  # an MLP has no table: None resolves to float32, nothing to store
    with torch.no_grad():
        expected = net(x).numpy()
    cos = _cosine(c.predict(x.numpy()), expected)  # 10 logits of a random 3-layer MLP: 4-bit errors add up
    assert cos.mean() > (0.98 if runtime.bits == 4 else 0.999) and cos.min() > (0.95 if runtime.bits == 4 else 0.999)


def test_tiny_bert_four_bit_is_faithful_and_smaller_than_int8(bert):
    model, inputs, expected = bert
    one = {k: v[:1] for k, v in inputs.items()}
    c = sl.compress(model, Recipe(runtime=WeightOnly(embeddings=32)), example_inputs=one)
    assert len(_nodes(c, "MatMulNBits")) == 12  # q, k, v, output, intermediate, output: 6 Linear x 2 layers
    graph = onnx.load_from_string(c.onnx_bytes).graph
    weights = {i.name for i in graph.initializer}
    assert not [n for n in graph.node if n.op_type == "MatMul" and n.input[1] in weights]  # no eligible MatMul left float
    assert c.details["matmul_left_float"] == 0
    assert _cosine(c.predict(inputs), expected).mean() > 0.99
    # embeddings=32 keeps the tables float: about half of this tiny model's weights
    assert 0.3 < c.details["nbits_weight_fraction"] < 0.7 and not _nodes(c, "GatherBlockQuantized")
    emb = sl.compress(model, Recipe(runtime=WeightOnly()), example_inputs=one)  # the default stores tables at 4 bits
    assert len(_nodes(emb, "GatherBlockQuantized")) == 3 and emb.details["nbits_weight_fraction"] == 1.0
    assert emb.details["weight_only_embeddings"] == 4
    assert emb.details["weight_only_embeddings_reason"] == "the graph has embedding tables"
    assert _cosine(emb.predict(inputs), expected).mean() > 0.98
    int8 = sl.compress(model, Recipe(runtime=sl.Int8Dynamic(op_types=("MatMul", "Gemm", "Gather"))), example_inputs=one)
    fp32 = sl.compress(model, Recipe(), example_inputs=one)
    assert len(emb.onnx_bytes) < len(int8.onnx_bytes) < len(fp32.onnx_bytes)
    assert len(emb.onnx_bytes) < 0.3 * len(fp32.onnx_bytes)


def test_model_with_nothing_eligible_is_refused():
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3)).eval()
    with pytest.raises(ConfigError) as info:
        sl.compress(cnn, Recipe(runtime=WeightOnly()), example_inputs=torch.randn(1, 1, 8, 8))
    for word in ("quantize nothing", "MatMul", "Conv", "Int8Static()"):
        assert word in str(info.value)


def test_embeddings_asked_of_a_model_without_tables_are_refused():
    with pytest.raises(ConfigError, match="embedding tables.*has none"):
        sl.compress(_mlp(), Recipe(runtime=WeightOnly(embeddings=4)), example_inputs=_x(2))


def test_onnx_file_in_and_save_load_round_trip(tmp_path):
    net, x = _mlp(), _x()
    fp32_path = tmp_path / "mlp.onnx"
    sl.compress(net, example_inputs=x[:2]).save(fp32_path)
    source = fp32_path.read_bytes()
    c = sl.compress(fp32_path, Recipe(runtime=WeightOnly()), example_inputs=x[:2].numpy())
    assert fp32_path.read_bytes() == source  # the caller's file is not changed
    saved = c.save(tmp_path / "mlp.w4.onnx")
    meta = json.loads((tmp_path / "mlp.w4.onnx.json").read_text())
    assert Recipe.from_dict(meta["recipe"]) == c.recipe
    session = ort.InferenceSession(str(saved), providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(out, c.predict(x.numpy()), rtol=1e-6, atol=1e-6)
    assert saved.stat().st_size < 0.3 * len(source)


def test_quantizer_import_leaves_the_root_logger_alone():
    # ONNX Runtime's quantizer module calls logging.basicConfig(level=INFO) on import: in a fresh process
    # (the module not yet imported), compressing must leave the root logger without a handler.
    code = (
        "import logging, torch, squeezelab as sl\n"
        "net = torch.nn.Sequential(torch.nn.Linear(32, 8))\n"
        "sl.compress(net, sl.Recipe(runtime=sl.WeightOnly()), example_inputs=torch.randn(2, 32))\n"
        "print(len(logging.getLogger().handlers), logging.getLogger().level)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert done.stdout.split() == ["0", str(logging.WARNING)]
    assert "[INFO]" not in done.stderr


# --------------------------------------------------------------------------- sweep, explorer, search


def test_grid_recipe_maps_bits_to_weight_only_widths():
    from squeezelab.engine.explore.sweep import grid_recipe

    assert grid_recipe(4, runtime="weight-only").runtime == WeightOnly(bits=4)
    assert grid_recipe(8, runtime=WeightOnly(block_size=64, method="rtn")).runtime == WeightOnly(bits=8, block_size=64, method="rtn")
    assert grid_recipe(32, runtime="weight-only") == Recipe()
    with pytest.raises(ConfigError, match="bits=3 with runtime WeightOnly.*4 or 8"):
        grid_recipe(3, runtime="weight-only")


def test_sweep_over_weight_only_widths(digits_mlp, tmp_path):
    model, split = digits_mlp
    x, y = split.test
    s = sl.sweep(model, (x[:100], y[:100]), bits=(8, 4), sparsity=(0.0,), runtime="weight-only", cache=tmp_path, progress=False, rounds=0)
    table = s.table.set_index("label")
    assert list(table.index) == ["fp32", "weightonly8-b32-auto", "weightonly4-b32-auto"]
    assert table["executable"].all()
    assert table.loc["weightonly4-b32-auto", "size_bytes"] < table.loc["weightonly8-b32-auto", "size_bytes"] < table.loc["fp32", "size_bytes"]
    assert table.loc["weightonly8-b32-auto", "accuracy_drop"] <= 0.01  # 8-bit blocks: the digits MLP keeps its accuracy


def test_explorer_offers_weight_only_and_builds_its_recipe():
    from squeezelab.widgets._explorer_choices import RUNTIME_CHOICES, control_recipe

    # (not offered for an ONNX file: its bit-width slider is disabled, and the width is the choice here)
    assert "weight-only" in [v for _, v in RUNTIME_CHOICES]
    assert control_recipe(4, 0.0, "linear-symmetric", "magnitude", "weight-only").label == "weightonly4-b32-auto"
    assert control_recipe(8, 0.5, "linear-symmetric", "magnitude", "weight-only").label == "magnitude50%-layer + weightonly8-b32-auto"
    with pytest.raises(ConfigError, match="4 or 8"):
        control_recipe(3, 0.0, "linear-symmetric", "magnitude", "weight-only")


def test_search_takes_weight_only_for_latency_and_for_size(digits_mlp, tmp_path):
    model, split = digits_mlp
    x, y = split.test
    data = (x[:120], y[:120])
    sized = sl.search(model, data, runtime=WeightOnly(), max_accuracy_drop=0.05, cache=tmp_path, progress=False)
    assert sized.trail["move"].str.startswith("weight-only:").all()  # the rounding method, then the bytes
    assert isinstance(sized.recipe.runtime, WeightOnly) or sized.recipe == Recipe()
    result = sl.search(model, data, objective="latency", runtime=WeightOnly(bits=8), sparsity=(0.0, 0.25), max_accuracy_drop=0.05,
                       time_budget_s=60, cache=tmp_path, progress=False)
    assert result.recipe.runtime == WeightOnly(bits=8) or result.recipe == Recipe()
    assert result.trail["label"].str.contains("weightonly8").all() and result.row["accuracy_drop"] <= 0.05


class _Encoder(nn.Module):
    """Embedding -> Linear -> unit vector: a Gather table and a ReduceL2 (whose signature changed in opset 18)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.table, self.proj = nn.Embedding(100, 64), nn.Linear(64, 32)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.proj(self.table(ids)).mean(1), dim=-1)


def test_four_bit_tables_convert_the_graph_to_opset_21_so_every_op_stays_valid():
    model, ids = _Encoder().eval(), torch.randint(0, 100, (16, 6), generator=torch.Generator().manual_seed(2))
    c = sl.compress(model, Recipe(runtime=WeightOnly(embeddings=4)), example_inputs=ids[:1], opset=17)
    assert c.details["opset"] == 21 and len(_nodes(c, "GatherBlockQuantized")) == 1 and len(_nodes(c, "MatMulNBits")) == 1
    onnx.checker.check_model(onnx.load_from_string(c.onnx_bytes))
    with torch.no_grad():
        expected = model(ids).numpy()
    assert _cosine(c.predict(ids.numpy()), expected).mean() > 0.98


def test_rtn_error_stays_within_half_a_quantization_step_per_block():
    # Round to nearest over blocks of 32 input weights, 16 levels spanning each block's range (0 included
    # or not): each weight moves by at most half a step, range / 15 / 2, so |y_q - y| <= sum_k |x_k| * that.
    torch.manual_seed(3)
    layer = nn.Linear(96, 40, bias=False).eval()
    x = torch.randn(16, 96)
    # float compute: int8 compute (accuracy_level=4) would add the activations' own rounding to the bound
    c = sl.compress(layer, Recipe(runtime=WeightOnly(bits=4, block_size=32, method="rtn", compute="float")), example_inputs=x[:1])
    w = layer.weight.detach().numpy().T.reshape(3, 32, 40)  # (blocks, 32, N): K split into blocks of 32
    half_step = (np.maximum(w.max(1), 0) - np.minimum(w.min(1), 0)) / 15 / 2  # (blocks, N)
    bound = np.abs(x.numpy()).reshape(16, 3, 32).sum(2) @ half_step  # (16, N)
    error = np.abs(c.predict(x.numpy()) - layer(x).detach().numpy())
    assert (error <= bound + 1e-4).all()
    assert error.max() > 1e-3  # the weights really are 4-bit, not float
