"""The timing layer: the real clock by default, a seeded scramble, cost models, and their injection."""

from __future__ import annotations

import logging
import math

import pytest

import squeezelab as sl
from squeezelab.engine.explore.evaluation import Evaluator
from squeezelab.engine.measurement import timing
from squeezelab.engine.measurement.latency import interleaved_latency
from squeezelab.engine.measurement.op_times import _table
from squeezelab.engine.measurement.paired import measure_pair
from squeezelab.engine.measurement.timing import SCRAMBLE_ENV, CostModel, ScrambledTimer, Timer, active_timer, using_timer


@pytest.fixture
def no_scramble(monkeypatch):
    """Real time whatever the environment of this run says (the scramble is what some tests here check)."""
    monkeypatch.delenv(SCRAMBLE_ENV, raising=False)


def _counting_runners(names):
    calls = {name: 0 for name in names}

    def runner(name):
        def run():
            calls[name] += 1
        return run

    return {name: runner(name) for name in names}, calls


def test_real_time_is_the_default(no_scramble):
    timer = active_timer()
    assert type(timer) is Timer and timer.key is None and timer.describe() is None
    runners, calls = _counting_runners(["a", "b"])
    ms = interleaved_latency(runners, rounds=4, warmup=2, inner=3)
    assert calls == {"a": 2 + 4 * 3, "b": 2 + 4 * 3}  # every sample really ran its calls
    assert all(len(v) == 4 and all(t >= 0 for t in v) for v in ms.values())


def test_a_cost_model_gives_its_stated_times_without_running_the_rounds():
    runners, calls = _counting_runners(["fp32", "int8"])
    with using_timer(CostModel({"fp32": 3.0, "int8": 1.5})):
        ms = interleaved_latency(runners, rounds=5, warmup=1)
    assert ms == {"fp32": [3.0] * 5, "int8": [1.5] * 5}
    assert calls == {"fp32": 1, "int8": 1}  # the warm-up still runs each model once


def test_injection_is_restored_after_the_block_even_on_error(no_scramble):
    outer, inner = CostModel({"x": 1.0}), CostModel({"x": 2.0})
    with using_timer(outer):
        with pytest.raises(RuntimeError):
            with using_timer(inner):
                assert active_timer() is inner
                raise RuntimeError("inside")
        assert active_timer() is outer
    assert type(active_timer()) is Timer


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: using_timer(lambda name: 1.0).__enter__(), "give a squeezelab Timer"),
        (lambda: CostModel(3.0), "cost=3.0"),
        (lambda: ScrambledTimer("7"), "seed='7'"),
        (lambda: ScrambledTimer(1, spread=1.0), "spread=1.0"),
    ],
)
def test_bad_timers_are_refused(make, message):
    with pytest.raises(sl.errors.ConfigError, match=message):
        make()


@pytest.mark.parametrize("cost", [0.0, float("nan"), -1.0, "fast"])
def test_a_bad_cost_is_refused_before_any_run(cost):
    runners, calls = _counting_runners(["a"])
    with using_timer(CostModel(lambda name: cost, name="bad")), pytest.raises(sl.errors.ConfigError, match=f"cost {cost!r} for runner 'a'"):
        interleaved_latency(runners, rounds=2, warmup=3)
    assert calls == {"a": 0}
    with using_timer(CostModel({"b": 1.0})), pytest.raises(sl.errors.ConfigError, match="no cost for runner 'a'"):
        interleaved_latency(runners, rounds=2)


def test_the_scramble_is_deterministic_for_a_seed_and_differs_between_seeds():
    names = ["fp32", "int8", "pruned"]
    one, again, other = ScrambledTimer(7), ScrambledTimer(7), ScrambledTimer(8)
    draws = [one.factors(names) for _ in range(3)]
    assert draws == [again.factors(names) for _ in range(3)]
    assert draws != [other.factors(names) for _ in range(3)]
    assert all(0.25 <= f <= 4.0 for d in draws for f in d.values())
    assert draws[0] != draws[1]  # every measurement draws new factors


def test_the_scramble_changes_ratios_per_runner_per_measurement():
    # Scrambling a cost model makes the oracle exact: each runner's samples carry one factor.
    timer = ScrambledTimer(3, base=CostModel({"a": 1.0, "b": 1.0}))
    expected = ScrambledTimer(3)
    with using_timer(timer):
        first = interleaved_latency({"a": lambda: None, "b": lambda: None}, rounds=4, warmup=0)
        second = interleaved_latency({"a": lambda: None, "b": lambda: None}, rounds=4, warmup=0)
    for ms, factor in ((first, expected.factors(["a", "b"])), (second, expected.factors(["a", "b"]))):
        assert ms["a"] == pytest.approx([factor["a"]] * 4) and ms["b"] == pytest.approx([factor["b"]] * 4)
    ratios = [first["a"][0] / first["b"][0], second["a"][0] / second["b"][0]]
    assert all(not math.isclose(r, 1.0) for r in ratios) and not math.isclose(*ratios)


def test_the_environment_switch_turns_the_scramble_on_at_call_time(monkeypatch, caplog):
    monkeypatch.setattr(timing, "_SCRAMBLED", {})  # a fresh process as far as the warning goes
    monkeypatch.setenv(SCRAMBLE_ENV, "5")
    with caplog.at_level(logging.WARNING, logger=timing.__name__):
        timer = active_timer()
        assert active_timer() is timer  # one stream per seed per process
    assert isinstance(timer, ScrambledTimer) and timer.seed == 5 and timer.key == ("scrambled", 5, 4.0)
    assert f"{SCRAMBLE_ENV}=5" in timer.describe()
    warnings = [r.getMessage() for r in caplog.records if r.name == timing.__name__]
    assert len(warnings) == 1 and "not measurements" in warnings[0]
    with using_timer(CostModel({"a": 1.0})) as injected:
        assert active_timer() is injected  # an injected timer beats the switch
    monkeypatch.setenv(SCRAMBLE_ENV, "")
    assert type(active_timer()) is Timer
    monkeypatch.setenv(SCRAMBLE_ENV, "yes")
    with pytest.raises(sl.errors.ConfigError, match=f"{SCRAMBLE_ENV}='yes'; give an integer seed"):
        interleaved_latency({"a": lambda: None}, rounds=1)


def test_op_times_profiles_are_scrambled_per_op_type(no_scramble):
    events = [
        {"cat": "Node", "name": f"{op}_kernel_time", "dur": 100, "args": {"op_name": op, "provider": "CPU"}}
        for op in ("Conv", "Relu")
    ]
    real = _table(events, runs=1, timer=active_timer())
    assert real["share"].tolist() == [0.5, 0.5]
    scrambled = _table(events, runs=1, timer=ScrambledTimer(11))
    factor = ScrambledTimer(11).factors([("Conv", "float"), ("Relu", "float")])
    shares = dict(zip(scrambled["op_type"], scrambled["share"]))
    assert shares["Conv"] == pytest.approx(factor[("Conv", "float")] / sum(factor.values()))
    assert scrambled["share"].sum() == pytest.approx(1.0)


@pytest.fixture(scope="module")
def int8_pair(digits_mlp):
    model, split = digits_mlp
    int8 = sl.compress(model, sl.Recipe(runtime=sl.Int8Dynamic()), example_inputs=split.x_test[:1])
    return model, split, int8


def test_a_cost_model_by_size_sets_the_speedup_and_labels_the_points(int8_pair):
    model, split, int8 = int8_pair
    with using_timer(CostModel.by_size()):
        p = measure_pair(model, int8, split.test, rounds=3)
    assert p.speedup == pytest.approx(p.baseline.size_bytes / p.candidate.size_bytes)
    assert p.candidate.latency_ms == pytest.approx(10.0 * int8.size_bytes / 1e6)
    assert p.candidate.details["timing"] == "cost model: by_size(10 ms/MB) (not measured)"
    with pytest.raises(sl.errors.ConfigError, match="has no size_bytes"):
        with using_timer(CostModel.by_size()):
            interleaved_latency({"a": lambda: None}, rounds=1)


def test_cache_entries_of_modelled_times_never_mix_with_measured_ones(int8_pair, tmp_path, no_scramble):
    model, split, _ = int8_pair
    ev = Evaluator(model, split.test, rounds=2, cache=tmp_path)
    recipe = sl.Recipe(runtime=sl.Int8Dynamic())
    real_key = ev.key(recipe)
    with using_timer(CostModel.by_size()):
        assert ev.key(recipe) != real_key
        assert ev.with_settings(rounds=0).key(recipe) == ev.with_settings(rounds=0).key(recipe)
        untimed = ev.with_settings(rounds=0).key(recipe)
    assert ev.with_settings(rounds=0).key(recipe) == untimed  # figures without times share entries
    assert ev.key(recipe) == real_key


def test_cost_models_share_cache_entries_only_under_one_name():
    assert CostModel(lambda c: 1.0, name="flat").key == CostModel(lambda c: 2.0, name="flat").key
    assert CostModel({"a": 1.0}).key != CostModel({"a": 2.0}).key  # unnamed: each instance its own
    assert CostModel.by_size(10).key == CostModel.by_size(10).key != CostModel.by_size(20).key
