"""Models past ONNX's 2 GB limit (issue #24): exported, converted, saved, loaded, measured and gated as a file with
its weights beside it (external data). Small models take that path under a lowered limit (``protobuf_limit``), and
every result must equal the one the same model gives as one protobuf: the same outputs, the same weights."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

import squeezelab as sl
from squeezelab.checks import Budget, judge
from squeezelab.checks.baseline_cache import BaselineCache
from squeezelab.engine.core.errors import ModelTooLargeError
from squeezelab.engine.core.samples import read_samples
from squeezelab.engine.pipeline.export_memo import forget_exports
from squeezelab.engine.runtime.external_data import OnnxFile, is_file_model, load_proto, model_size
from squeezelab.engine.runtime.size_limit import file_threshold, protobuf_limit
from squeezelab.engine.runtime.stages import recording
from squeezelab.engine.zoo import tiny_bert, tiny_bert_inputs

SMALL = 10_000  # bytes: every model below is past it


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(128, 128), torch.nn.ReLU(), torch.nn.Linear(128, 8)).eval()


def _weights(model: bytes) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in load_proto(model).graph.initializer}


def _assert_same_model(one: sl.Compressed, other: sl.Compressed, example: object) -> None:
    a, b = _weights(one.onnx_bytes), _weights(other.onnx_bytes)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert np.array_equal(one.predict(example), other.predict(example))
    assert {n.op_type for n in load_proto(one.onnx_bytes).graph.node} == {
        n.op_type for n in load_proto(other.onnx_bytes).graph.node}


CASES = {
    "int8 fused BERT": (tiny_bert, lambda: tiny_bert_inputs(batch=2, seq=8), sl.Recipe(runtime=sl.Int8Dynamic())),
    "int8 MLP (quant_pre_process)": (_mlp, lambda: torch.randn(4, 128), sl.Recipe(runtime=sl.Int8Dynamic())),
    "4-bit BERT, tables at opset 21": (tiny_bert, lambda: tiny_bert_inputs(batch=2, seq=8), sl.Recipe(runtime=sl.WeightOnly())),
    "fp32": (tiny_bert, lambda: tiny_bert_inputs(batch=2, seq=8), sl.Recipe()),
    "float16": (_mlp, lambda: torch.randn(4, 128), sl.Recipe(quantization=sl.Float16())),
}


@pytest.mark.parametrize("case", list(CASES))
def test_past_the_limit_compress_gives_the_same_model_as_a_file(case):
    build, example_of, recipe = CASES[case]
    torch.manual_seed(1)
    example = example_of()
    whole = sl.compress(build(), recipe, example_inputs=example)
    with protobuf_limit(SMALL):
        large = sl.compress(build(), recipe, example_inputs=example)
    assert not is_file_model(whole.onnx_bytes) and is_file_model(large.onnx_bytes)
    graph = onnx.load_from_string(bytes(large.onnx_bytes))
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.graph.initializer)
    assert len(large.onnx_bytes) < large.size_bytes == model_size(large.onnx_bytes)  # the data file counted
    _assert_same_model(whole, large, example)
    assert large.details["stages"] and large.details.get("choices", {}).get("fusion") == whole.details.get(
        "choices", {}).get("fusion")


def test_a_large_result_saves_beside_its_data_and_loads_back_in_both_forms(tmp_path):
    example = tiny_bert_inputs(batch=2, seq=8)
    with protobuf_limit(SMALL):
        large = sl.compress(tiny_bert(), sl.Recipe(runtime=sl.Int8Dynamic()), example_inputs=example)
        path = large.save(tmp_path / "out" / "bert.onnx")
        meta = json.loads((tmp_path / "out" / "bert.onnx.json").read_text())
        again = sl.compress(path, sl.Recipe())  # read in place: its weights stay in bert.onnx.data
    assert (tmp_path / "out" / "bert.onnx.data").is_file() and meta["external_data"] == "bert.onnx.data"
    assert meta["size_bytes"] == path.stat().st_size + (tmp_path / "out" / "bert.onnx.data").stat().st_size
    assert isinstance(again.onnx_bytes, OnnxFile) and again.onnx_bytes.path == path
    embedded = sl.compress(path, sl.Recipe())  # under ONNX's own limit the weights are read back in
    assert not is_file_model(embedded.onnx_bytes)
    expected = large.predict(example)
    assert np.array_equal(again.predict(example), expected) and np.array_equal(embedded.predict(example), expected)
    with pytest.raises(sl.SqueezeError, match="exists"):  # the data file is checked like the .json before writing
        (tmp_path / "other.onnx.data").write_bytes(b"")
        large.save(tmp_path / "other.onnx")


def test_a_large_model_is_measured_and_gated_with_the_same_figures(tmp_path):
    torch.manual_seed(2)
    inputs = torch.randn(32, 128)
    data = (inputs, None)
    recipe = sl.Recipe(runtime=sl.Int8Dynamic())
    whole = sl.compress(_mlp(), recipe, example_inputs=inputs[:4])
    with protobuf_limit(SMALL):
        large = sl.compress(_mlp(), recipe, example_inputs=inputs[:4])
        pair = sl.measure_pair(_mlp(), large, data, rounds=3, warmup=1)
        cache = BaselineCache(tmp_path / "cache")
        samples = read_samples(data)
        stored = cache.baseline(_mlp(), samples, inputs[:4], None, 16)
        hit = cache.baseline(_mlp(), samples, inputs[:4], None, 16)
    assert pair.candidate.executable and pair.candidate.size_bytes == large.size_bytes
    reference = sl.measure_pair(_mlp(), whole, data, rounds=3, warmup=1)
    assert pair.candidate.value == reference.candidate.value  # the same outputs, so the same scores
    assert np.array_equal(pair.candidate.scores, reference.candidate.scores)
    verdict = judge(pair, Budget(max_accuracy_drop=0.05, min_compression=2.0, require_executable=True))
    assert verdict.passed, verdict.failure_message()
    assert stored.status == "stored" and hit.status == "hit"
    assert is_file_model(hit.compressed.onnx_bytes) and np.array_equal(hit.outputs, stored.outputs)


def test_static_int8_past_the_limit_is_refused_naming_the_step_and_the_size():
    calibration = torch.randn(16, 128)
    with recording() as log, protobuf_limit(SMALL), pytest.raises(ModelTooLargeError, match=r"convert \(int8-static") as caught:
        sl.compress(_mlp(), sl.Recipe(runtime=sl.Int8Static()), example_inputs=calibration[:4],
                    calibration_data=calibration)
    assert caught.value.step == "convert" and caught.value.size_bytes > SMALL and "Int8Dynamic" in str(caught.value)
    assert [row["stage"] for row in log.records] == ["check"]  # refused in the first checks: nothing exported


def test_layers_kept_float_under_fusion_past_the_limit_are_refused_naming_fusion():
    recipe = sl.Recipe(runtime=sl.Int8Dynamic(), layers=[sl.LayerSetting(name="encoder.layer.0.attention.self.query",
                                                                         bits=32)])
    with protobuf_limit(SMALL), pytest.raises(ModelTooLargeError, match="fusion") as caught:
        sl.compress(tiny_bert(), recipe, example_inputs=tiny_bert_inputs(batch=2, seq=8))
    assert caught.value.step == "fusion" and "fusion=False" in str(caught.value)


BETWEEN = 300_000  # bytes: tiny BERT's fp32 weights (~0.58 MB) are past it, its int8 and 4-bit ones are not


@pytest.mark.parametrize("recipe", [sl.Recipe(runtime=sl.Int8Dynamic()), sl.Recipe(runtime=sl.WeightOnly()),
                                    sl.Recipe(runtime=sl.Int8Static())], ids=["int8", "4-bit", "static int8"])
def test_a_model_moved_as_a_file_gives_the_same_file_byte_for_byte_when_the_result_fits(recipe):
    # Past the file threshold (1 GiB by default: BERT-large) the export is a file from step to step; a result
    # below it (its int8 or 4-bit file) is bytes again, and the very bytes the one-protobuf path writes.
    example = tiny_bert_inputs(batch=2, seq=8)
    calibration = tiny_bert_inputs(batch=8, seq=8)
    whole = sl.compress(tiny_bert(), recipe, example_inputs=example, calibration_data=calibration)
    with file_threshold(BETWEEN):
        moved = sl.compress(tiny_bert(), recipe, example_inputs=example, calibration_data=calibration)
        fp32 = sl.compress(tiny_bert(), sl.Recipe(), example_inputs=example)
    assert is_file_model(fp32.onnx_bytes) and not is_file_model(moved.onnx_bytes)
    assert moved.onnx_bytes == whole.onnx_bytes


def test_past_the_file_threshold_compress_shares_the_callers_weights_only_when_nothing_changes_them():
    model, example = tiny_bert(), tiny_bert_inputs(batch=2, seq=8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with file_threshold(BETWEEN):
        shared = sl.compress(model, sl.Recipe(runtime=sl.Int8Dynamic()), example_inputs=example)
        pruned = sl.compress(model, sl.Recipe(pruning=sl.MagnitudePruning(sparsity=0.5), runtime=sl.Int8Dynamic()),
                             example_inputs=example)
    mine, theirs = dict(model.named_parameters()), dict(shared.model.named_parameters())
    assert shared.model is not model and all(theirs[k] is mine[k] for k in mine)  # modules copied, tensors shared
    assert all(p.data_ptr() != mine[k].data_ptr() for k, p in pruned.model.named_parameters())  # pruning: a copy
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the caller's model unchanged
    assert model.training == tiny_bert().training and np.array_equal(
        shared.predict(example), sl.compress(model, sl.Recipe(runtime=sl.Int8Dynamic()), example_inputs=example).predict(example))


def test_a_large_models_export_is_reused_by_its_next_compress_until_the_model_changes():
    model, example = tiny_bert(), tiny_bert_inputs(batch=2, seq=8)
    forget_exports()
    with file_threshold(BETWEEN):
        fp32 = sl.compress(model, sl.Recipe(), example_inputs=example)
        int8 = sl.compress(model, sl.Recipe(runtime=sl.Int8Dynamic()), example_inputs=example)
        same = sl.compress(model, sl.Recipe(), example_inputs=example)
        other_example = sl.compress(model, sl.Recipe(), example_inputs=tiny_bert_inputs(batch=3, seq=8))
        with torch.no_grad():
            model.embeddings.LayerNorm.bias.add_(1.0)  # the caller changes the model: exported again
        changed = sl.compress(model, sl.Recipe(), example_inputs=example)
    forget_exports()
    assert same.onnx_bytes.path == fp32.onnx_bytes.path and int8.executable  # the int8 call used that export too
    assert other_example.onnx_bytes.path != fp32.onnx_bytes.path != changed.onnx_bytes.path
    assert not np.array_equal(changed.predict(example), fp32.predict(example))


def test_a_large_export_passed_on_as_onnx_bytes_is_read_as_its_file():
    # squeezelab gate hands the fp32 export's onnx_bytes to measure: an OnnxFile stays one (its weights beside it)
    example = torch.randn(4, 128)
    with protobuf_limit(SMALL):
        fp32 = sl.compress(_mlp(), sl.Recipe(), example_inputs=example)
        again = sl.compress(fp32.onnx_bytes, sl.Recipe(runtime=sl.Int8Dynamic()))
        point = sl.measure(fp32.onnx_bytes, (example, None), rounds=0)
    assert again.executable and point.size_bytes == fp32.size_bytes
    assert np.allclose(again.predict(example), fp32.predict(example), atol=0.1)
