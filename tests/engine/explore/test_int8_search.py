"""Accuracy-aware int8 search: groups the fused graph keeps float together, subsample probes verified on
all the data, bisection over the gain order, the time budget, and the best measured result.

Oracles: the exported graphs (which nodes stay float), a counting oracle for bisection, and the search's own
trail (every returned figure must be a row measured on all the data). Small seeded models only; no speed
is asserted (CPUs differ).
"""

from __future__ import annotations

import math
import time

import numpy as np
import onnx
import pytest
import squeezelab as sl
from squeezelab.engine.explore.evaluation import Evaluator
from squeezelab.engine.runtime.int8_graph import fuse_transformer, fused_holders
from squeezelab.engine.explore.int8_probes import (
    bisect_prefix, candidate_groups, fp32_export, gain_order, group_costs, group_label, prefix_layers, probe_evaluator,
    subsample,
)
from squeezelab.engine.explore.algorithm_stage import calibration_options, transform_options
from squeezelab.engine.explore.int8_search import float_layers_recipe, search_int8
from squeezelab.engine.measurement.timing import CostModel, using_timer
from squeezelab.engine.zoo import tiny_bert, tiny_bert_inputs
from tests.conftest import state_hash

QKV = tuple(f"encoder.layer.0.attention.self.{p}" for p in ("query", "key", "value"))
TABLES = ("embeddings.word_embeddings", "embeddings.position_embeddings", "embeddings.token_type_embeddings")


@pytest.fixture(scope="module")
def bert():
    model = tiny_bert(seed=0)
    inputs = {k: v.numpy() for k, v in tiny_bert_inputs(batch=48, seq=12, seed=1).items()}
    return model, inputs


def _one(inputs):
    return {k: v[:1] for k, v in inputs.items()}


def _ops_by_name(onnx_bytes: bytes) -> dict[str, str]:
    return {n.name: n.op_type for n in onnx.load_from_string(onnx_bytes).graph.node}


# ----------------------------------------------------------------------------- fused groups


def test_fused_ops_name_the_layers_they_hold(bert):
    model, inputs = bert
    fp32 = sl.compress(model, sl.Recipe(), example_inputs=_one(inputs)).onnx_bytes
    fused, info = fuse_transformer(fp32)
    assert fused is not None and info["fused"]["Attention"] == 2
    holders = fused_holders(fp32, fused)
    assert holders["Attention_0"] == ["model." + name for name in QKV]
    assert holders["Attention_1"] == ["model." + name.replace("layer.0", "layer.1") for name in QKV]
    assert sorted(holders["EmbedLayerNormalization_0"]) == sorted("model." + t for t in TABLES)


def test_query_key_value_kept_float_together_keep_the_graph_fused(bert, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model, inputs = bert
    before = state_hash(model)
    runtime = sl.Int8Dynamic(reduce_range=True)
    all_int8 = sl.compress(model, sl.Recipe(runtime=runtime), example_inputs=_one(inputs))
    mixed = sl.compress(
        model, sl.Recipe(runtime=runtime, layers=tuple(sl.LayerSetting(name=n, bits=32) for n in QKV + TABLES)),
        example_inputs=_one(inputs),
    )
    choices = mixed.details["choices"]
    assert choices["fusion"] is True and "fused" in choices["why"]["fusion"]
    ops = _ops_by_name(mixed.onnx_bytes)
    # Layer 0's attention and the embeddings stay float fused ops; layer 1's attention is int8.
    assert ops["Attention_0"] == "Attention" and ops["EmbedLayerNormalization_0"] == "EmbedLayerNormalization"
    assert "QAttention" in ops.values() and "Attention_0_quant" not in ops
    assert "QAttention" in _ops_by_name(all_int8.onnx_bytes).values()
    assert not np.allclose(mixed.predict(inputs), all_int8.predict(inputs))
    assert state_hash(model) == before


def test_candidate_groups_join_what_fusion_merges_and_the_embedding_tables(bert, digits_cnn):
    model, inputs = bert
    ev = Evaluator(model, (inputs, None), cache=False, metric="cosine_to_baseline", rounds=0)
    groups = candidate_groups(model, fp32_export(ev), sl.Int8Dynamic())
    assert QKV in groups and tuple(n.replace("layer.0", "layer.1") for n in QKV) in groups
    assert sum(1 for g in groups if set(g) <= set(TABLES)) == 1 and set(TABLES) == {n for g in groups for n in g if "embeddings" in n}
    assert ("encoder.layer.0.output.dense",) in groups and "pooler.dense" not in {n for g in groups for n in g}
    assert group_label(QKV) == "encoder.layer.0.attention.self.{query,key,value}"
    # Unfused, every projection is its own node, so its own candidate.
    unfused = candidate_groups(model, fp32_export(ev), sl.Int8Dynamic(fusion=False))
    assert (QKV[0],) in unfused and QKV not in unfused
    cnn, split = digits_cnn
    cnn_ev = Evaluator(cnn, (split.x_test[:8], split.y_test[:8]), cache=False, rounds=0)
    cnn_groups = candidate_groups(cnn, fp32_export(cnn_ev), sl.Int8Static())
    assert cnn_groups and all(len(g) == 1 for g in cnn_groups)


# ----------------------------------------------------------------------------- bisection


@pytest.mark.parametrize("count, smallest", [(24, 13), (24, 1), (24, 24), (7, 5), (1, 1)])
def test_bisection_finds_the_fewest_groups_in_log_steps(count, smallest):
    asked: list[int] = []

    def ok(k):
        asked.append(k)
        return k >= smallest

    k, out_of_time = bisect_prefix(ok, count)
    assert (k, out_of_time) == (smallest, False)
    assert len(asked) <= math.ceil(math.log2(count + 1)) and len(set(asked)) == len(asked)


def test_bisection_starts_from_the_guess_and_reports_nothing_or_time_out():
    asked: list[int] = []
    k, _ = bisect_prefix(lambda k: asked.append(k) or k >= 10, 24, first=10)
    assert asked[0] == 10 and k == 10
    assert bisect_prefix(lambda k: False, 24) == (None, False)  # nothing holds: no k is claimed
    calls = iter([True, None])
    assert bisect_prefix(lambda k: next(calls), 24) == (12, True)  # out of time: the last k that held


def test_prefix_layers_and_subsample(bert):
    order = [("a",), ("b", "c"), ("d",)]
    assert prefix_layers(order, 2) == ("a", "b", "c") and prefix_layers(order, 0) == ()
    model, inputs = bert
    ev = Evaluator(model, (inputs, None), cache=False, metric="cosine_to_baseline", rounds=0)
    assert len(subsample(ev, 16).samples) == 16 and subsample(ev, 48) is ev and subsample(ev, 0) is ev


# ----------------------------------------------------------------------------- the search


@pytest.fixture(scope="module")
def bert_search(bert, tmp_path_factory):
    """One search on the tiny BERT with a budget that all-int8 misses (half its measured drop)."""
    model, inputs = bert
    ev = Evaluator(model, (inputs, None), cache=tmp_path_factory.mktemp("cache"), metric="cosine_to_baseline", rounds=0)
    runtime = sl.Int8Dynamic(reduce_range=True)
    start_drop = ev.baseline().value - ev.evaluate(sl.Recipe(runtime=runtime)).value
    budget = start_drop / 2
    started = time.monotonic()
    result = search_int8(model, ev, runtime, objective="size", max_accuracy_drop=budget, time_budget_s=300,
                         confidence=0, progress=False, probe_samples=16)
    return result, budget, time.monotonic() - started, ev


def test_search_probes_on_the_subsample_and_returns_only_points_measured_on_all_the_data(bert_search):
    result, budget, _, _ = bert_search
    trail = result.trail
    probes = trail[trail["move"].str.startswith("probe")]
    assert len(probes) >= 3 and set(probes["data"]) == {"subset (16)"}
    assert result.recipe != sl.Recipe() and result.row["data"] == "all (48)"
    assert result.row["drop_bound"] <= budget
    full = trail[trail["data"] == "all (48)"]
    assert result.row["size_bytes"] == full[full["accepted"]]["size_bytes"].min()  # the smallest accepted file
    assert set(result.trail["float_layers"].iloc[0]) == set()  # it started from all int8


def test_search_candidates_include_the_embeddings_and_grouped_attention(bert_search):
    moves = list(bert_search[0].trail["move"])
    assert any(m.startswith("probe: {embeddings.") or ("embeddings" in m and m.startswith("probe:")) for m in moves)
    assert "probe: encoder.layer.0.attention.self.{query,key,value} float" in moves


def test_search_descends_by_bisection_and_measures_each_candidate_once(bert_search):
    result, _, _, _ = bert_search
    trail = result.trail
    groups = len(trail[trail["move"].str.startswith("probe:")])
    bisect = trail[trail["move"].str.startswith("bisect")]
    per_data = bisect.groupby("data").size()
    assert (per_data <= math.ceil(math.log2(groups + 1)) + 1).all()  # not one evaluation per group
    sub, full = bisect[bisect["data"] == "subset (16)"], bisect[bisect["data"] == "all (48)"]
    held = sub[sub["accepted"]]
    if len(held) and len(full):  # verification on all the data starts at (or below: a cached probe) the subsample's answer
        assert len(full["float_layers"].iloc[0]) <= min(map(len, held["float_layers"]))
    keys = [(row.data, tuple(sorted(row.float_layers))) for row in trail.itertuples()]
    assert len(keys) == len(set(keys))
    # The answer keeps whole groups float: an attention's projections all or none.
    kept = {s.name for s in result.recipe.layers}
    assert len(kept & set(QKV)) in (0, 3)


def test_the_searched_recipe_reproduces_its_figures(bert_search, bert):
    result, _, _, ev = bert_search
    again = ev.evaluate(result.recipe)
    assert again.value == pytest.approx(result.row["value"], abs=1e-6)


def test_a_search_after_the_int8_map_ranks_by_the_maps_points_and_probes_nothing(bert, tmp_path):
    model, inputs = bert
    runtime = sl.Int8Dynamic(reduce_range=True)
    ev = Evaluator(model, (inputs, None), cache=tmp_path, metric="cosine_to_baseline", rounds=0)
    table = sl.layer_sensitivity(model, (inputs, None), runtime=runtime, evaluator=ev, progress=False)
    budget = (table.attrs["baseline_value"] - table.attrs["all_int8"]) / 2
    result = search_int8(model, ev, runtime, objective="size", max_accuracy_drop=budget, time_budget_s=300,
                         confidence=0, progress=False, probe_samples=16)
    trail = result.trail
    probes = trail[trail["move"].str.startswith("probe:")]
    assert len(probes) == len(table) and set(probes["data"]) == {"all (48), from the cache"}
    # the map's gains are the probes' gains: the same points
    (start,) = trail.loc[trail["move"] == "start: all int8", "value"]
    gains = dict(zip(probes["move"], probes["value"] - start))
    for row in table.itertuples():
        assert gains[f"probe: {row.layer} float (int8 map)"] == pytest.approx(row.gain, abs=1e-12)
    assert not trail["data"].str.startswith(("probe", "subset (16), ")).any()  # nothing probed: the map's points stood in
    assert result.row["data"].startswith("all (48)") and result.row["drop_bound"] <= budget


def test_the_bisection_on_all_the_data_takes_the_subsets_clear_rejections_without_measuring_them(bert, tmp_path, monkeypatch):
    # The paired test's verdict is replaced by a fixed rule, so what is checked is what the bisection does with
    # it, on any CPU: every candidate rejected on the subset is never measured on all the data; none rejected,
    # the bisection measures on all the data as before.
    from squeezelab.engine.explore import int8_search

    model, inputs = bert
    for reject in (True, False):
        asked = []
        monkeypatch.setattr(int8_search._Runner, "fails_on_subset", lambda self, layers, move: asked.append(layers) or reject)
        ev = Evaluator(model, (inputs, None), cache=tmp_path / str(reject), metric="cosine_to_baseline", rounds=0)
        result = search_int8(model, ev, sl.Int8Dynamic(reduce_range=True), objective="size", max_accuracy_drop=1e-9,
                             time_budget_s=300, confidence=0.9, progress=False, probe_samples=16)
        trail = result.trail
        on_all = trail[trail["move"].str.startswith("bisect") & (trail["data"] == "all (48)")]
        assert asked and on_all.empty == reject
        assert result.row["data"].startswith("all (48)")  # the answer is measured on all the data (here fp32)


def test_a_clear_failure_on_the_subset_is_one_whose_paired_lower_bound_exceeds_the_budget(bert, tmp_path):
    model, inputs = bert
    ev = Evaluator(model, (inputs, None), cache=tmp_path, metric="cosine_to_baseline", rounds=0)
    result = search_int8(model, ev, sl.Int8Dynamic(reduce_range=True), objective="size", max_accuracy_drop=0.0,
                         time_budget_s=300, confidence=0.9, progress=False, probe_samples=16)
    trail = result.trail
    rejected = trail[trail.get("sequential", "").astype(str).str.startswith("lower bound")] if "sequential" in trail else trail[:0]
    for row in rejected.itertuples():  # a positive lower bound, so a positive mean drop, on the subset
        assert row.data == "subset (16)" and float(row.sequential.split()[2]) > 0.0 and row.drop > 0.0
        assert not any(set(r.float_layers) == set(row.float_layers) for r in trail.itertuples() if r.data == "all (48)")
    assert result.row["data"].startswith("all (48)")  # never a subset point


def test_search_respects_a_tight_time_budget_and_returns_its_best_measured_result(bert, tmp_path):
    model, inputs = bert
    started = time.monotonic()
    result = sl.search(model, (inputs, None), runtime=sl.Int8Dynamic(reduce_range=True), objective="size",
                       max_accuracy_drop=0.0, confidence=0, time_budget_s=0.5, metric="cosine_to_baseline",
                       cache=tmp_path, progress=False)
    elapsed = time.monotonic() - started
    # The whole search takes about 1.5 s in a warm process on a 2-core EPYC (it converges within a 2 s budget,
    # which made this test flaky); 0.5 s cannot hold the export, the baselines and the probes (which stop at
    # half the budget) on any CPU.
    assert result.stopped == "time budget" and elapsed < 0.5 + 10  # + one evaluation started in time
    full = result.trail[result.trail["data"].str.startswith("all") & result.trail["accepted"]]
    # Nothing within a zero drop: the measured fp32 baseline, never an unverified subset point.
    assert result.recipe == sl.Recipe() or result.row["size_bytes"] == full["size_bytes"].min()


def test_a_cnn_search_verifies_its_probe_answer_on_all_the_data(digits_cnn, tmp_path):
    model, split = digits_cnn
    data = (split.x_test[:96], split.y_test[:96])
    result = sl.search(model, data, runtime=sl.Int8Static(), objective="size", max_accuracy_drop=0.0, confidence=0,
                       time_budget_s=120, cache=tmp_path, progress=False, calibration_data=split.x_train[:64])
    trail = result.trail
    assert set(trail["data"]) <= {"all (96)", "probe (32, cosine to fp32)"}  # no subset bisection in 0/1 scores
    if result.recipe != sl.Recipe():
        assert result.row["data"] == "all (96)" and result.row["drop_bound"] <= 0.0
    # How every layer is quantized is tried first (the calibrations, on the probes), then the descent starts
    # from all int8 measured on all the data.
    stage = trail["move"].str.startswith("algorithms:")
    assert stage.iloc[0] and set(trail.loc[stage, "data"]) <= {"probe (32, cosine to fp32)", "all (96)"}
    first_on_all = trail[trail["data"] == "all (96)"].iloc[0]
    assert first_on_all["move"] == "start: all int8" or first_on_all["move"].startswith("algorithms:")
    steps = transform_options(model, sl.Int8Static(), has_calibration=True)
    calibrations = calibration_options(sl.Int8Static())
    assert len(result.details["algorithms"]["tried"]) == len(steps) + len(calibrations) - 1  # one axis at a time


def test_a_latency_search_under_accuracy_probes_by_cosine_and_decides_on_all_the_data(digits_cnn, tmp_path):
    model, split = digits_cnn
    data = (split.x_test[:96], split.y_test[:96])
    result = sl.search(model, data, runtime=sl.Int8Static(), objective="latency", max_accuracy_drop=0.0, confidence=0,
                       time_budget_s=120, cache=tmp_path, progress=False, rounds=3, warmup=1,
                       calibration_data=split.x_train[:64])
    trail = result.trail
    # Accuracy scores each digit 0 or 1: the probes rank layers by cosine to fp32, and decide nothing.
    probes = trail[trail["data"] == "probe (32, cosine to fp32)"]
    assert len(probes) >= 2 and not probes["accepted"].any()
    assert probes["value"].between(-1, 1).all() and probes["value"].iloc[0] < 1.0  # cosines; all-int8 is not exact
    assert result.recipe == sl.Recipe() or result.row["data"] == "all (96)"


def test_probes_measure_cosine_under_a_0_1_metric_and_the_metric_itself_otherwise(digits_cnn, bert):
    model, split = digits_cnn
    accuracy = Evaluator(model, (split.x_test[:64], split.y_test[:64]), rounds=0, cache=False)
    probe, own = probe_evaluator(accuracy, 16)
    assert not own and probe.metric.key == "cosine" and len(probe.samples) == 16
    agreement = Evaluator(model, (split.x_test[:64], None), metric="agreement", rounds=0, cache=False)
    assert probe_evaluator(agreement, 16)[0].metric.key == "cosine"
    bert_model, inputs = bert
    cosine = Evaluator(bert_model, (inputs, None), rounds=0, cache=False)
    probe, own = probe_evaluator(cosine, 16)
    assert own and probe.metric is cosine.metric and len(probe.samples) == 16


def test_an_onnx_file_keeps_named_layers_float_under_int8(bert, tmp_path, monkeypatch):
    """The search quantizes one export many times: a file takes LayerSetting(bits=32), and nothing else per layer."""
    monkeypatch.chdir(tmp_path)
    model, inputs = bert
    export = sl.compress(model, sl.Recipe(), example_inputs=_one(inputs)).onnx_bytes
    layer = "encoder.layer.1.output.dense"
    recipe = sl.Recipe(runtime=sl.Int8Dynamic(reduce_range=True), layers=(sl.LayerSetting(name=layer, bits=32),))
    from_file = sl.compress(export, recipe, example_inputs=_one(inputs))
    from_torch = sl.compress(model, recipe, example_inputs=_one(inputs))
    assert from_file.details["choices"]["layers_float"] == [layer]
    np.testing.assert_allclose(from_file.predict(inputs), from_torch.predict(inputs), atol=1e-6)


def test_gain_order_ranks_by_gain_per_weight_and_puts_useless_groups_last(bert):
    gains = {("a",): 0.004, ("b",): 0.002, ("c",): -0.001, ("d",): 0.0}
    costs = {("a",): 4.0, ("b",): 1.0, ("c",): 1.0, ("d",): 1.0}
    assert gain_order(gains, costs) == [("b",), ("a",), ("d",), ("c",)]
    model, _ = bert
    groups = [QKV, TABLES, ("encoder.layer.0.output.dense",)]
    size, latency = group_costs(model, groups, "size"), group_costs(model, groups, "latency")
    assert size[QKV] == sum(dict(model.named_modules())[n].weight.numel() for n in QKV)
    assert latency[TABLES] == 0.0 < size[TABLES]  # a Gather computes nothing: float embeddings cost no speed
    assert gain_order({TABLES: 1e-6, QKV: 0.01}, latency)[0] == TABLES
    assert gain_order({TABLES: 1e-6, QKV: 0.01}, size)[0] == QKV


def test_static_int8_search_calibrates_on_the_calibration_data_it_is_given(digits_cnn, tmp_path):
    """``calibration_data=`` reaches every candidate: the all-int8 start point is the one an Evaluator
    calibrated on those inputs measures, and a calibration of a tenth of the range measures another model."""
    model, split = digits_cnn
    data = (split.x_test[:64], split.y_test[:64])
    validation = (split.x_test[64:128], split.y_test[64:128])
    int8 = sl.Recipe(runtime=sl.Int8Static())
    values = {}
    for name, calibration in {"train": split.x_train[:64], "squeezed": split.x_train[:64] * 0.1}.items():
        result = sl.search(model, data, runtime=sl.Int8Static(), calibration_data=calibration, metric="cosine_to_baseline",
                           max_accuracy_drop=1.0, time_budget_s=120, cache=tmp_path, progress=False, rounds=0,
                           validation_data=validation)
        start = result.trail[result.trail["move"] == "start: all int8"].iloc[0]
        oracle = Evaluator(model, data, calibration_data=calibration, metric="cosine_to_baseline", rounds=0, cache=False)
        assert start["value"] == pytest.approx(oracle.evaluate(int8).value, abs=1e-9)
        held_out = Evaluator(model, validation, calibration_data=calibration, metric="cosine_to_baseline", rounds=0, cache=False)
        assert result.held_out["value"] == pytest.approx(held_out.evaluate(result.recipe).value, abs=1e-9)  # calibrated alike
        # all int8 is within a drop of 1.0: the smallest file, nothing kept float (the calibration method is the
        # algorithm stage's choice, which follows int8 numerics that differ between CPU kinds)
        assert isinstance(result.recipe.runtime, sl.Int8Static) and result.recipe.layers == ()
        values[name] = start["value"]
    assert values["squeezed"] < values["train"]  # activations clipped at a tenth of their range


# ----------------------------------------------------------------------------- latency, on modelled times

SLOW_IN_INT8 = "net.3"  # the digits MLP's middle Linear


def _one_layer_slow_in_int8(c):
    """fp32 10 ms; int8 5 ms, plus 4 ms while ``SLOW_IN_INT8`` runs in int8 (as a layer can on an AVX2-only CPU)."""
    if not isinstance(c.recipe.runtime, sl.Int8Dynamic):
        return 10.0
    kept_float = {layer.name for layer in c.recipe.layers if layer.bits == 32}
    return 5.0 + (0.0 if SLOW_IN_INT8 in kept_float else 4.0)


@pytest.mark.parametrize("cost", ["by size", "one layer slow in int8"])
def test_a_latency_search_keeps_the_fastest_measured_point_on_modelled_times(digits_mlp, tmp_path, cost):
    """Which layers a latency search keeps float follows from the times it is given, on every CPU."""
    model, split = digits_mlp
    data = (split.x_test[:120], split.y_test[:120])
    timer = CostModel.by_size() if cost == "by size" else CostModel(_one_layer_slow_in_int8)
    with using_timer(timer):
        result = sl.search(model, data, runtime=sl.Int8Dynamic(), objective="latency", max_accuracy_drop=0.05, confidence=0,
                           time_budget_s=120, cache=tmp_path, progress=False, rounds=3, warmup=1)
    trail = result.trail
    full = trail[trail["data"].str.startswith("all") & trail["accepted"]]
    assert result.row["speedup"] == full["speedup"].max() > 1  # the fastest point measured on all the data
    also = trail[trail["move"].str.startswith("also keep")]
    if cost == "by size":  # every layer kept float adds bytes, so time: all int8 is fastest, nothing is tried float
        assert result.recipe == sl.Recipe(runtime=sl.Int8Dynamic(), transforms=()) and also.empty
        assert result.row["speedup"] == pytest.approx(result.baseline["size_bytes"] / result.row["size_bytes"])
    else:  # the probe with the slow layer float ran faster than all int8: that layer is tried float and kept
        assert also["move"].tolist() == ["also keep 1 layer(s) float that ran slower in int8"]
        assert result.recipe == float_layers_recipe(sl.Recipe(runtime=sl.Int8Dynamic(), transforms=()), [SLOW_IN_INT8])
        assert result.row["speedup"] == pytest.approx(10.0 / 5.0)
