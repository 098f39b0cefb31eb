"""A Hugging Face BertModel (dict of int64 inputs, a ModelOutput) through every engine path, and ONNX files in.

The oracle is the fp32 PyTorch model's own output at an explicit tolerance; fidelity metrics (no labels)
compare every candidate with the uncompressed model's outputs.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

import squeezelab as sl
from squeezelab.engine.zoo import tiny_bert, tiny_bert_inputs

# Dynamic int8 of a BERT: its embedding tables are most of the weights, so Gather is quantized too
# (the default MatMul/Gemm alone would leave most of the model float and is refused).
DYNAMIC = sl.Int8Dynamic(op_types=("MatMul", "Gemm", "Gather"), reduce_range=True)


@pytest.fixture(scope="module")
def bert():
    model = tiny_bert(seed=0)
    inputs = {k: v.numpy() for k, v in tiny_bert_inputs(batch=24, seq=12, seed=1).items()}
    return model, inputs


def _one(inputs):
    return {k: v[:1] for k, v in inputs.items()}


def test_every_runtime_computes_what_the_torch_model_computes(bert):
    model, inputs = bert
    with torch.no_grad():
        expected = model(**{k: torch.from_numpy(v) for k, v in inputs.items()}).last_hidden_state.numpy()
    fp32 = sl.compress(model, example_inputs=_one(inputs))
    assert fp32.spec.describe() == (
        "input_ids (batch, sequence) int64, attention_mask (batch, sequence) int64, token_type_ids (batch, sequence) int64"
    )
    np.testing.assert_allclose(fp32.predict(inputs), expected, atol=1e-4, rtol=1e-4)
    graph_inputs = onnx.load_from_string(fp32.onnx_bytes).graph.input
    assert [i.type.tensor_type.elem_type for i in graph_inputs] == [onnx.TensorProto.INT64] * 3  # ids stay int64
    longer = {k: np.concatenate([v, v[:, :4]], axis=1) for k, v in inputs.items()}  # another sequence length
    assert fp32.predict(longer).shape == (24, 16, 64)
    int8 = sl.compress(model, sl.Recipe(runtime=DYNAMIC), example_inputs=_one(inputs))
    assert int8.executable and int8.details["int8_weight_fraction"] > 0.9
    cos = sl.metrics.cosine_to_baseline.scores(int8.predict(inputs), expected)
    assert cos.mean() > 0.98
    fp16 = sl.compress(model, sl.Recipe(quantization=sl.Float16(), runtime=sl.Simulated()), example_inputs=_one(inputs))
    np.testing.assert_allclose(fp16.predict(inputs), expected, atol=0.02)


def test_static_int8_calibrates_on_int64_inputs_and_output_selects_the_pooler(bert):
    model, inputs = bert
    c = sl.compress(model, sl.Recipe(runtime=sl.Int8Static(reduce_range=True)), example_inputs=_one(inputs),
                    calibration_data=(inputs, None), output="pooler_output")
    with torch.no_grad():
        pooled = model(**{k: torch.from_numpy(v) for k, v in inputs.items()}).pooler_output.numpy()
    out = c.predict(inputs)
    assert out.shape == (24, 64) and c.details["int8_weight_fraction"] > 0.2
    assert sl.metrics.cosine_to_baseline.scores(out, pooled).mean() > 0.95


def test_measure_pair_judges_an_embedding_model_by_fidelity_with_a_t_interval(bert):
    model, inputs = bert
    int8 = sl.compress(model, sl.Recipe(runtime=DYNAMIC), example_inputs=_one(inputs))
    pair = sl.measure_pair(model, int8, (inputs, None), rounds=4)
    assert pair.candidate.metric == "cosine to fp32" and pair.baseline.value == pytest.approx(1.0)
    interval = pair.drop_interval
    assert interval.method == "t" and interval.n == 24 and interval.low <= interval.drop <= interval.high
    assert 0 < interval.drop < 0.02 and not pair.candidate.percent
    with pytest.raises(sl.errors.DataError, match="baseline="):
        sl.measure(int8, (inputs, None), rounds=1)  # fidelity needs the uncompressed model
    alone = sl.measure(int8, (inputs, None), rounds=1, baseline=model)
    assert alone.value == pytest.approx(pair.candidate.value)
    # Reference embeddings as targets: the same figure through cosine_similarity.
    with torch.no_grad():
        reference = model(**{k: torch.from_numpy(v) for k, v in inputs.items()}).last_hidden_state.numpy()
    with_targets = sl.measure(int8, (inputs, reference), metric=sl.metrics.cosine_similarity, rounds=1)
    assert with_targets.value == pytest.approx(pair.candidate.value, abs=1e-6)


def test_sweep_sensitivity_and_search_on_bert_with_fidelity(bert, tmp_path):
    model, inputs = bert
    data = (inputs, None)
    s = sl.sweep(model, data, bits=[8, 4], sparsity=[0.0], recipes=[sl.Recipe(runtime=DYNAMIC)], cache=tmp_path,
                 progress=False, rounds=2)
    assert s.metric == "cosine to fp32" and s.metric_key == "cosine" and "accuracy" not in s.table
    assert s.table["cosine"].iloc[0] == pytest.approx(1.0) and (s.table["drop"].iloc[1:] > 0).all()
    assert (s.table["drop_low"].iloc[1:] <= s.table["drop"].iloc[1:]).all()
    table = sl.layer_sensitivity(model, data, bits=[4], sparsity=[], cache=tmp_path, progress=False)
    assert "encoder.layer.0.attention.self.query" in set(table["layer"]) and table.attrs["metric_key"] == "cosine"
    assert (table["cosine_drop"] >= -1e-9).all() and table["cosine_drop"].max() > 0
    found = sl.search(model, data, max_accuracy_drop=0.01, bits=[8, 4], sparsity=[0.0], time_budget_s=8,
                      cache=tmp_path, progress=False)
    assert found.row["drop"] <= 0.01 and found.row["size_bytes"] <= found.baseline["size_bytes"]
    assert "cosine to fp32" in repr(found) and " pp" not in repr(found)


def test_an_onnx_file_goes_through_compress_measure_and_sweep(bert, tmp_path):
    model, inputs = bert
    path = sl.compress(model, example_inputs=_one(inputs)).save(tmp_path / "bert.onnx")
    int8 = sl.compress(path, sl.Recipe(runtime=DYNAMIC))
    assert int8.model is None and int8.details["source"] == "bert.onnx" and int8.spec.names[0] == "input_ids"
    as_tuple = int8.predict(tuple(inputs.values()))  # positional, in the graph's order
    np.testing.assert_array_equal(as_tuple, int8.predict(inputs))
    static = sl.compress(path, sl.Recipe(runtime=sl.Int8Static(reduce_range=True)), calibration_data=(inputs, None))
    assert static.executable
    pair = sl.measure_pair(path, int8, (inputs, None), rounds=2)
    assert pair.candidate.value > 0.98
    calibration = {k: v.numpy() for k, v in tiny_bert_inputs(batch=8, seq=12, seed=2).items()}  # not the scored inputs
    s = sl.sweep(path, (inputs, None), bits=[8], sparsity=[0.0], runtime="int8-static", calibration_data=calibration,
                 cache=tmp_path, progress=False, rounds=2)
    assert len(s.table) == 2 and s.table["executable"].all()
    with pytest.raises(sl.errors.ConfigError, match="needs the PyTorch model"):
        sl.compress(path, sl.Recipe(quantization=sl.LinearQuantization(bits=4), runtime=sl.Simulated()))
    with pytest.raises(sl.errors.ConfigError, match=r"output='logits' is not an output of the ONNX graph.*\['output'\]"):
        sl.compress(path, output="logits")
    with pytest.raises(sl.errors.ModelError, match="not a readable ONNX model"):
        sl.compress(tmp_path / "bert.onnx.json")


def test_quantizing_a_transformer_leaves_nothing_in_the_working_directory(bert, tmp_path, monkeypatch):
    # ONNX Runtime's symbolic shape inference fails on BERT graphs and then saves its half-inferred
    # model as ./sym_shape_infer_temp.onnx plus a uuid-named weights file: the user's folder.
    model, inputs = bert
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.txt").write_text("the user's own file")
    sl.compress(model, sl.Recipe(runtime=DYNAMIC), example_inputs=_one(inputs))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]
