"""SearchConfig and Grid: one frozen value per verb, its fields also read as keywords, bad ones refused before any work;
and the one result type every search strategy returns."""

from __future__ import annotations

import dataclasses

import pytest

import squeezelab as sl
from squeezelab.engine.explore.overrides import with_overrides
from squeezelab.engine.explore.search_result import SearchResult
from squeezelab.explore import Grid, SearchConfig


@pytest.fixture(scope="module")
def small(digits_mlp):
    model, split = digits_mlp
    x, y = split.test
    return model, (x[:150], y[:150])


def test_search_config_checks_and_normalises_its_fields():
    config = SearchConfig(bits=(4, 8, 8), sparsity=0.5, max_accuracy_drop=0)
    assert config.bits == (8, 4) and config.sparsity == (0.5,) and config.max_accuracy_drop == 0.0
    assert dataclasses.replace(config, bits=2).bits == (2,)  # replace checks and normalises again
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.bits = (2,)  # type: ignore[misc]
    for kwargs, message in (
        (dict(objective="energy"), r"SearchConfig: objective='energy'; use 'size' or 'latency'"),
        (dict(bits=[]), r"bits=\[\]"),
        (dict(quantization="float16"), r"quantization='float16' has no width to choose"),
        (dict(seed=1.5), r"SearchConfig: seed=1.5 must be an integer"),
        (dict(runtime="int8-dynamic"), r"SearchConfig: runtime='int8-dynamic'; pass a runtime config"),
        (dict(time_budget_s=-1), r"time_budget_s=-1 is not allowed"),
    ):
        with pytest.raises(sl.errors.ConfigError, match=message):
            SearchConfig(**kwargs)


def test_overrides_change_the_config_fields_and_pass_the_settings_on():
    base = SearchConfig(objective="latency", sparsity=(0.0, 0.5))
    config, rest = with_overrides("search", SearchConfig, base, {"max_accuracy_drop": 0.02, "rounds": 3, "metric": "top1"},
                                  keyword="config")
    assert config == dataclasses.replace(base, max_accuracy_drop=0.02) and base.max_accuracy_drop == 0.01  # base unchanged
    assert rest == {"rounds": 3, "metric": "top1"}
    assert with_overrides("sweep", Grid, None, {}, keyword="grid") == (Grid(), {})
    # confidence is a field of both: it is the search's bound, as search's own keyword always was
    config, rest = with_overrides("search", SearchConfig, None, {"confidence": 0.5}, keyword="config")
    assert config.confidence == 0.5 and rest == {}


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m, d, c: sl.search(m, d, cache=c, progress=False, max_acuracy_drop=0.02),
         r"search got unknown keyword\(s\) \['max_acuracy_drop'\]: SearchConfig's fields are .*'max_accuracy_drop'.*; "
         r"Settings' \(how to measure\) are .*'rounds'"),
        (lambda m, d, c: sl.search(m, d, cache=c, progress=False, config=Grid()),
         r"search got config=Grid\(.*\), a Grid where a SearchConfig goes; pass config=SearchConfig\(...\)"),
        (lambda m, d, c: sl.search(m, d, SearchConfig(), cache=c, progress=False),
         r"search got a SearchConfig where its Settings go .*; pass it as config=SearchConfig\("),
        (lambda m, d, c: sl.sweep(m, d, Grid(bits=4), cache=c, progress=False),
         r"sweep got a Grid where its Settings go .*; pass it as grid=Grid\("),
        (lambda m, d, c: sl.sweep(m, d, cache=c, progress=False, bit=[4]),
         r"sweep got unknown keyword\(s\) \['bit'\]: Grid's fields are \['bits', "),
        (lambda m, d, c: sl.sweep(m, d, grid=Grid(bits=4), cache=c, progress=False, sparsity=[1.5]),
         r"sparsity=1.5 must be"),
        (lambda m, d, c: sl.search(m, d, objective="latency", rounds=0, cache=c, progress=False),
         r"objective='latency' ranks points by their measured speedup; rounds=0 times nothing. Leave rounds= out"),
        # train_data is read only by the size search of a simulated quantizer: elsewhere refused, never ignored
        (lambda m, d, c: sl.search(m, d, objective="latency", train_data=d, cache=c, progress=False),
         r"search with objective='latency' does not fine-tune: train_data= is read only by the size search"),
        (lambda m, d, c: sl.search(m, d, runtime=sl.WeightOnly(), train_data=d, cache=c, progress=False),
         r"search with objective='size' and runtime=WeightOnly\(.*\) does not fine-tune"),
    ],
)
def test_bad_configs_and_keywords_are_refused_before_any_work(small, tmp_path, call, message):
    model, data = small
    folder = tmp_path / "cache"
    with pytest.raises(sl.errors.ConfigError, match=message):
        call(model, data, folder)
    assert not folder.exists()  # refused before the cache (or the model) was touched


def test_a_config_and_its_fields_as_keywords_give_the_same_search(small, tmp_path):
    model, data = small
    config = SearchConfig(bits=(8, 4), sparsity=(0.0, 0.5), max_accuracy_drop=0.02, time_budget_s=60)
    by_config = sl.search(model, data, config=config, cache=tmp_path, progress=False)
    by_keywords = sl.search(model, data, bits=(8, 4), sparsity=(0.0, 0.5), max_accuracy_drop=0.02, time_budget_s=60,
                            cache=tmp_path, progress=False)
    assert type(by_config) is SearchResult and by_config.recipe == by_keywords.recipe
    assert list(by_config.trail["move"]) == list(by_keywords.trail["move"])
    # an override on top of the config wins over its field
    tighter = sl.search(model, data, config=config, max_accuracy_drop=0.0, confidence=0, cache=tmp_path, progress=False)
    assert tighter.row["drop"] <= 0.0 + 1e-12
    assert by_config.point is by_config.row["point"] and by_config.baseline["move"] == "fp32 baseline"
    assert by_config.elapsed_s > 0
    assert by_config.point.latency_ms is None  # size is judged without timing, whatever the settings say


def test_a_strategy_answer_is_a_search_result_that_search_completes(small):
    model, _ = small
    found = SearchResult(recipe=sl.Recipe(), model=model, row={"point": None, "value": 1.0}, trail=[], stopped="converged")
    done = found.with_context(elapsed_s=1.5, baseline={"move": "fp32 baseline"})
    assert (found.elapsed_s, found.baseline) == (0.0, {})  # the strategy's answer is left as it was
    assert (done.elapsed_s, done.baseline, done.stopped) == (1.5, {"move": "fp32 baseline"}, "converged")


def test_sweep_takes_a_grid_or_its_fields(small, tmp_path):
    model, data = small
    grid = Grid(bits=[8, 4], sparsity=0.0)
    by_grid = sl.sweep(model, data, grid=grid, cache=tmp_path, progress=False, rounds=0)
    by_keywords = sl.sweep(model, data, bits=[8, 4], sparsity=[0.0], cache=tmp_path, progress=False, rounds=0)
    assert list(by_grid.table["label"]) == list(by_keywords.table["label"]) and len(by_grid.table) == 3
    assert by_keywords.hits == 3  # the same recipes: all read from the cache the first call filled
    one_more = sl.sweep(model, data, grid=grid, bits=[2], cache=tmp_path, progress=False, rounds=0)
    assert len(one_more.table) == 2 and one_more.table["bits"].tolist()[-1] == 2  # the keyword replaced the grid's bits


def test_grid_checks_its_fields():
    assert Grid(recipes=sl.Recipe(runtime=sl.Int8Dynamic())).recipes == (sl.Recipe(runtime=sl.Int8Dynamic()),)
    assert Grid(bits=4, sparsity=[0.0, 0.5]).bits == (4,)
    # a runtime name is checked when the grid is made; float16 is the explorer's choice for an ONNX file
    assert [Grid(runtime=name).runtime for name in ("int8-dynamic-embeddings", "float16")] == ["int8-dynamic-embeddings", "float16"]
    for kwargs, message in (
        (dict(bits="8"), r"bits='8' is not a number or a list of numbers"),
        (dict(bits=[8], sparsity=[]), r"sparsity=\[\] is empty"),
        (dict(quantization="int4"), r"quantization='int4'; use one of"),
        (dict(pruning="random"), r"pruning='random'; use one of"),
        (dict(recipes=["int8"]), r"recipes must hold Recipe objects"),
        (dict(runtime=8), r"Grid: runtime=8; pass a runtime name"),
        (dict(runtime="int8-dynamc"), r"runtime='int8-dynamc'; use one of 'simulated', .*'weight-only', or 'float16'"),
    ):
        with pytest.raises(sl.errors.ConfigError, match=message):
            Grid(**kwargs)
