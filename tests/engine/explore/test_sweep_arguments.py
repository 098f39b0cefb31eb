"""sweep, layer_sensitivity, search and Sweep.best refuse (or accept) the same arguments, before any work."""

from __future__ import annotations

import concurrent.futures as cf
import math

import numpy as np
import pandas as pd
import pytest

import squeezelab as sl
from squeezelab.engine.explore.sweep import Sweep, grid_recipe, sweep

NAN, INF = float("nan"), float("inf")


@pytest.fixture(scope="module")
def small(digits_mlp):
    model, split = digits_mlp
    x, y = split.test
    return model, (x[:200], y[:200])


@pytest.fixture
def no_work(monkeypatch, tmp_path):
    """Fail the test if any point is measured; the cache folder it names must stay absent."""
    import squeezelab.engine.explore.evaluation as evaluation
    import squeezelab.engine.explore.sweep as sweeping

    def never(*args, **kwargs):
        raise AssertionError("a point was measured before the bad argument was refused")

    monkeypatch.setattr(evaluation, "run_point", never)
    monkeypatch.setattr(sweeping, "run_point", never)
    folder = tmp_path / "cache"
    yield folder
    assert not folder.exists(), "the cache folder was created before the bad argument was refused"


def _call(kind: str, model, data, cache, **kwargs):
    if kind == "sweep":
        return sweep(model, data, cache=cache, progress=False, **kwargs)
    if kind == "layer_sensitivity":
        return sl.layer_sensitivity(model, data, cache=cache, progress=False, **kwargs)
    return sl.search(model, data, cache=cache, progress=False, **kwargs)


class _OwnExecutor(cf.Executor):
    """An executor whose "shut down" state lives where no private-attribute check would look."""

    def __init__(self) -> None:
        self.open = True

    def submit(self, fn, /, *args, **kwargs):
        if not self.open:
            raise RuntimeError("cannot schedule new futures after shutdown")
        future: cf.Future = cf.Future()
        future.set_result(fn(*args, **kwargs))
        return future

    def shutdown(self, wait=True, *, cancel_futures=False):
        self.open = False


def _shut_down(executor: cf.Executor) -> cf.Executor:
    executor.shutdown()
    return executor


@pytest.mark.parametrize("kind", ["sweep", "layer_sensitivity"])
@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: "process", r"executor='process' is not a concurrent.futures.Executor; pass an instance"),
        (lambda: cf.ProcessPoolExecutor, r"executor=<class 'concurrent.futures.process.ProcessPoolExecutor'> is a class"),
        (lambda: _shut_down(cf.ThreadPoolExecutor(1)), r"executor=<concurrent.futures.thread.ThreadPoolExecutor.* does not accept work .*shut down"),
        (lambda: _shut_down(_OwnExecutor()), r"executor=<.*_OwnExecutor.* does not accept work .*executor=None"),
    ],
)
def test_bad_executors_are_refused_before_any_work(small, no_work, kind, make, message):
    model, data = small
    with pytest.raises(sl.errors.ConfigError, match=message):
        _call(kind, model, data, no_work, executor=make(), bits=(4,), sparsity=(0.5,))


def test_a_live_executor_of_our_own_kind_runs_the_sweep(small, tmp_path):
    model, data = small
    own = sweep(model, data, bits=4, sparsity=0.0, cache=tmp_path, progress=False, latency_repeats=0, executor=_OwnExecutor())
    assert len(own.table) == 2 and own.misses == 2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(max_accuracy_drop=NAN), r"max_accuracy_drop=nan is not allowed: it must be a finite number >= 0"),
        (dict(max_accuracy_drop=INF), r"max_accuracy_drop=inf is not allowed: it must be a finite number >= 0"),
        (dict(max_accuracy_drop=True), r"max_accuracy_drop=True"),
        (dict(time_budget_s=NAN), r"time_budget_s=nan is not allowed: it must be a finite number > 0"),
        (dict(time_budget_s=INF), r"time_budget_s=inf is not allowed: it must be a finite number > 0"),
        (dict(confidence=NAN), r"confidence=nan is not allowed: it must be a finite number >= 0 and < 1"),
        (dict(finetune_epochs=0), r"finetune_epochs=0 is not allowed: it must be an integer >= 1"),
        (dict(objective="latency", sparsity=(0.96,)), r"sparsity=\[0.96\]: channel pruning .* below 0.95"),
    ],
)
def test_nan_and_inf_budgets_are_refused_by_search(small, no_work, kwargs, message):
    model, data = small
    with pytest.raises(sl.errors.ConfigError, match=message):
        _call("search", model, data, no_work, **kwargs)


def _hand_made_sweep() -> Sweep:
    def point(label, value, size, executable):
        return sl.Point(label=label, recipe={}, executable=executable, runtime="x", bits=8, weight_sparsity=0.0,
                        value=value, size_bytes=size, latency_ms=1.0)

    return Sweep.from_points([point("fp32", 0.98, 1000, True), point("a", 0.975, 300, False), point("b", 0.90, 100, False)])


@pytest.mark.parametrize("budget", [NAN, INF, -0.01, "0.01", None])
def test_best_refuses_a_budget_that_is_not_a_finite_drop(budget):
    s = _hand_made_sweep()
    with pytest.raises(sl.errors.ConfigError, match=rf"max_accuracy_drop={budget!r}.*finite number >= 0".replace("(", r"\(").replace(")", r"\)")):
        s.best(max_accuracy_drop=budget)
    assert s.best(max_accuracy_drop=0.01)["label"] == "a"  # the oracle: 0.5 pp drop fits, 8 pp does not
    assert s.best(max_accuracy_drop=0.1)["label"] == "b"


@pytest.mark.parametrize(
    "kind, kwargs, message",
    [
        ("sweep", dict(bits=[], sparsity=[0.5]), r"bits=\[\] is empty: sweep measures every bits × sparsity pair"),
        ("sweep", dict(bits=[4], sparsity=[]), r"sparsity=\[\] is empty: .*sparsity=\[0.0\] for unpruned"),
        ("sweep", dict(bits=[], sparsity=[]), r"bits=\[\] and sparsity=\[\] are empty: .*only the baseline"),
        ("sweep", dict(bits=[4], sparsity=[], recipes=[grid_recipe(2, 0.0)]), r"sparsity=\[\] is empty"),
        ("layer_sensitivity", dict(bits=[], sparsity=[]), r"bits=\[\] and sparsity=\[\] are empty: nothing to probe"),
        ("search", dict(bits=[]), r"bits=\[\] is empty: search picks each layer's value"),
        ("search", dict(sparsity=[]), r"sparsity=\[\] is empty: search picks each layer's value"),
    ],
)
def test_empty_grids_follow_one_rule(small, no_work, kind, kwargs, message):
    model, data = small
    with pytest.raises(sl.errors.ConfigError, match=message):
        _call(kind, model, data, no_work, **kwargs)


def test_empty_lists_where_nothing_is_dropped(small, tmp_path):
    model, data = small
    only = sweep(model, data, bits=[], sparsity=[], recipes=grid_recipe(4, 0.0), cache=tmp_path, progress=False, latency_repeats=0)
    assert only.table["label"].tolist() == ["fp32", grid_recipe(4, 0.0).label]  # one Recipe is a list of one
    bits_only = sl.layer_sensitivity(model, data, bits=[4], sparsity=[], cache=tmp_path, progress=False)
    assert set(bits_only["axis"]) == {"bits"} and len(bits_only) == len(sl.engine.core.layers.prunable_layers(model))


@pytest.mark.parametrize("kind", ["sweep", "layer_sensitivity", "search"])
@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(bits="4"), r"bits='4' is not a number or a list of numbers"),
        (dict(bits=True), r"bits=True is not allowed: each width must be an integer 1..16"),
        (dict(bits=[4, "8"]), r"bits='8' is not allowed: .*it is an item of bits=\[4, '8'\]"),
        (dict(bits=4.0), r"bits=4.0 is not allowed"),
        (dict(bits=40), r"bits=40 is not allowed: each width must be an integer 1..16 .* or 32"),
        (dict(bits=np.nan), r"bits=nan is not allowed"),
        (dict(sparsity=NAN), r"sparsity=nan must be a number in \[0, 1\)"),
        (dict(sparsity=[0.5, NAN]), r"sparsity=nan must be a number in \[0, 1\) .*item of sparsity=\[0.5, nan\]"),
        (dict(sparsity=1.5), r"sparsity=1.5 must be a number in \[0, 1\)"),
        (dict(sparsity=False), r"sparsity=False must be a number"),
        (dict(sparsity={"a": 0.5}), r"sparsity=\{'a': 0.5\} is not a number or a list of numbers"),
    ],
)
def test_bad_widths_and_sparsities_are_refused_everywhere(small, no_work, kind, kwargs, message):
    model, data = small
    with pytest.raises(sl.errors.ConfigError, match=message):
        _call(kind, model, data, no_work, **kwargs)


def test_widths_the_quantizer_cannot_take_are_refused_before_the_baseline(small, no_work):
    model, data = small
    with pytest.raises(sl.errors.ConfigError, match=r"KMeansQuantization: bits=16 is not allowed; bits must be an integer in 1..8"):
        _call("search", model, data, no_work, bits=(16, 8), quantization="kmeans")
    with pytest.raises(sl.errors.ConfigError, match=r"LinearQuantization: bits=32"):
        _call("layer_sensitivity", model, data, no_work, bits=(32,))


def test_one_value_means_a_list_of_one(small, tmp_path, monkeypatch):
    model, data = small
    listed = sweep(model, data, bits=[4], sparsity=[0.5], cache=tmp_path, progress=False, latency_repeats=0)
    scalar = sweep(model, data, bits=np.int64(4), sparsity=0.5, cache=tmp_path, progress=False, latency_repeats=0)
    assert (scalar.hits, scalar.misses) == (2, 0)  # the very same points, read back from the cache
    pd.testing.assert_frame_equal(listed.table.drop(columns="cached"), scalar.table.drop(columns="cached"))
    sens_listed = sl.layer_sensitivity(model, data, bits=[4], sparsity=[0.5], cache=tmp_path, progress=False)
    sens_scalar = sl.layer_sensitivity(model, data, bits=4, sparsity=0.5, cache=tmp_path, progress=False)
    pd.testing.assert_frame_equal(sens_listed, sens_scalar)
    found_listed = sl.search(model, data, bits=[4], sparsity=[0.0], cache=tmp_path, progress=False)
    found_scalar = sl.search(model, data, bits=4, sparsity=0.0, cache=tmp_path, progress=False)
    assert found_scalar.recipe == found_listed.recipe and len(found_scalar.trail) == len(found_listed.trail)


def test_grid_recipe_takes_numpy_scalars_and_refuses_strings_bools_and_nan():
    assert grid_recipe(np.int64(4), np.float64(0.5)) == grid_recipe(4, 0.5)
    for bits, sparsity, message in [("4", 0.0, "bits='4'"), (True, 0.0, "bits=True"), (4, math.nan, "sparsity=nan"), (4, True, "sparsity=True")]:
        with pytest.raises(sl.errors.ConfigError, match=message):
            grid_recipe(bits, sparsity)


def test_the_folded_int8_dynamic_embeddings_choice_is_read_as_int8_dynamic_and_no_longer_offered():
    from squeezelab.engine.core import choices

    assert grid_recipe(8, 0.0, runtime="int8-dynamic-embeddings") == grid_recipe(8, 0.0, runtime="int8-dynamic")
    assert grid_recipe(8, 0.0, runtime="int8-dynamic").runtime == sl.Int8Dynamic()
    assert "int8-dynamic-embeddings" not in choices.names("runtime") + choices.names("recipe")


@pytest.mark.parametrize("kind, value", [("quantization", "int4"), ("pruning", "random"), ("runtime", "tensorrt")])
def test_an_unknown_string_is_refused_with_the_tables_names(kind, value):
    from squeezelab.engine.core import choices

    with pytest.raises(sl.errors.ConfigError) as caught:
        grid_recipe(4, 0.5, **{kind: value})
    allowed = ", ".join(map(repr, choices.names(kind)))
    assert str(caught.value).startswith(f"{kind}={value!r}; use one of {allowed}, or ")


@pytest.mark.parametrize(
    "kind, kwargs",
    [
        ("sweep", dict(bits=[8], sparsity=[0.0], runtime="int8-static")),
        ("sweep", dict(bits=[], sparsity=[], recipes=[sl.Recipe(runtime=sl.Int8Static(calibration="entropy"))])),
        ("search", dict(runtime=sl.Int8Static(), objective="latency")),
    ],
)
def test_static_int8_without_calibration_data_is_refused_everywhere_before_any_work(small, no_work, kind, kwargs):
    # One rule on every entry point, as compress and the CLI: static int8 calibrates on inputs kept apart
    # from the data it is judged on; nothing is split off the evaluation data behind the caller's back.
    model, data = small
    with pytest.raises(sl.errors.CalibrationError) as refused:
        _call(kind, model, data, no_work, **kwargs)
    message = str(refused.value)
    assert "int8-static" in message and "calibration_data=None" in message
    assert "pass calibration_data=" in message and "kept apart from the evaluation data" in message
    assert "Int8Dynamic()" in message


def test_an_evaluator_without_calibration_refuses_static_int8_and_uses_the_inputs_it_is_given(digits_mlp):
    model, split = digits_mlp
    data, calibration = (split.x_test[:40], split.y_test[:40]), split.x_train[:16]
    static = sl.Recipe(runtime=sl.Int8Static())
    with pytest.raises(sl.errors.CalibrationError, match=r"calibration_data=None"):
        sl.explore.Evaluator(model, data, cache=False, rounds=0).evaluate(static)
    ev = sl.explore.Evaluator(model, data, calibration_data=calibration, cache=False, rounds=0)
    (given,) = ev.task(static).calibration.arrays
    np.testing.assert_array_equal(given, calibration)  # the caller's inputs, not a slice of the scored data
    assert ev.evaluate(static).n_samples == 40 and ev.evaluate(static).executable
