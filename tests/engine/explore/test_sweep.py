"""sweep(): the grid, the cache (hits, resume after a kill, corrupt entries), executors, Pareto."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import squeezelab as sl
from squeezelab.engine.explore.cache import ResultCache
from squeezelab.engine.explore.pareto import pareto_front
from squeezelab.engine.explore.sweep import SweepInterrupted, grid_recipe, sweep

from tests.conftest import state_hash

# Measured figures that must not depend on where a point ran (latency and timing do).
DETERMINISTIC = ["label", "kind", "executable", "bits", "sparsity", "weight_sparsity", "accuracy", "accuracy_drop", "size_bytes", "compression", "n_samples", "recipe", "scores"]
GRID = dict(bits=(8, 4, 2), sparsity=(0.0, 0.5))


@pytest.fixture(scope="module")
def small(digits_mlp):
    """The digits MLP and 200 held-out samples: quick points."""
    model, split = digits_mlp
    x, y = split.test
    return model, (x[:200], y[:200])


def test_grid_has_baseline_first_and_every_point(small, tmp_path):
    model, data = small
    s = sweep(model, data, **GRID, cache=tmp_path, progress=False, latency_repeats=3)
    t = s.table
    assert len(t) == 1 + 3 * 2
    assert t["is_baseline"].tolist() == [True] + [False] * 6
    assert t.iloc[0]["label"] == "fp32" and t.iloc[0]["accuracy_drop"] == 0
    assert set(zip(t["bits"][1:], t["sparsity"][1:])) == {(b, s) for b in (8, 4, 2) for s in (0.0, 0.5)}
    assert t["executable"].dtype == bool and not t["executable"][1:].any()  # simulated points, labelled
    assert all("(simulated)" in label for label in t["label"][1:])
    # compression is the real byte ratio to the fp32 ONNX file
    assert np.allclose(t["compression"], t.iloc[0]["size_bytes"] / t["size_bytes"])
    assert (t["size_bytes"][t["bits"] == 2] < t["size_bytes"][t["bits"] == 8].to_numpy()).all()
    pruned = t[t["sparsity"] == 0.5]
    assert (pruned["weight_sparsity"] >= 0.49).all()  # narrow codes round more weights to zero on top
    assert np.allclose(pruned[pruned["bits"] == 8]["weight_sparsity"], 0.5, atol=0.01)
    assert s.recipe(3) == grid_recipe(t.iloc[3]["bits"], t.iloc[3]["sparsity"])


def test_second_run_is_served_from_the_cache(small, tmp_path, monkeypatch):
    model, data = small
    first = sweep(model, data, **GRID, cache=tmp_path, progress=False, latency_repeats=3)
    assert (first.hits, first.misses) == (0, 7)

    def boom(*args, **kwargs):
        raise AssertionError("a cached point was recomputed")

    monkeypatch.setattr("squeezelab.engine.explore.sweep.run_point", boom)
    again = sweep(model, data, **GRID, cache=tmp_path, progress=False, latency_repeats=3)
    assert (again.hits, again.misses) == (7, 0)
    assert again.table["cached"].all()
    pd.testing.assert_frame_equal(first.table.drop(columns="cached"), again.table.drop(columns="cached"))


def test_cache_key_changes_with_weights_data_recipe_and_settings(small, tmp_path):
    model, (x, y) = small
    ev = sl.explore.Evaluator(model, (x, y), cache=tmp_path)
    r = grid_recipe(4, 0.0)
    key = ev.key(r)
    changed = type(model)()
    changed.load_state_dict(model.state_dict())
    with torch.no_grad():
        next(changed.parameters())[0, 0] += 1e-3
    assert sl.explore.Evaluator(changed, (x, y), cache=tmp_path).key(r) != key
    assert sl.explore.Evaluator(model, (x[:-1], y[:-1]), cache=tmp_path).key(r) != key
    assert sl.explore.Evaluator(model, (x, y), cache=tmp_path, latency_batch_size=8).key(r) != key
    assert ev.key(grid_recipe(3, 0.0)) != key
    assert sl.explore.Evaluator(model, (x.copy(), y.copy()), cache=tmp_path).key(r) == key  # content, not identity
    # calibration data matters to static int8 only
    other_calibration = sl.explore.Evaluator(model, (x, y), cache=tmp_path, calibration_data=x[::-1])
    assert other_calibration.key(r) == key
    static = grid_recipe(8, 0.0, runtime="int8-static")
    assert other_calibration.key(static) != ev.key(static)


def test_cache_key_covers_the_metric_and_a_model_changed_later(small, tmp_path):
    model, (x, y) = small
    r = grid_recipe(4, 0.0)

    def key(metric):
        return sl.explore.Evaluator(model, (x, y), cache=tmp_path, metric=metric).key(r)

    # two lambdas with one name but different code, or different captured values, never share entries
    assert key(lambda p, t: float((p.argmax(1) == t).mean())) != key(lambda p, t: 0.0)
    scale = 1.0
    first = key(lambda p, t: scale * float((p.argmax(1) == t).mean()))
    scale = 2.0
    assert key(lambda p, t: scale * float((p.argmax(1) == t).mean())) != first
    assert key(sl.metrics.top1_accuracy) == key(sl.metrics.top1_accuracy)
    # the evaluator keeps its own copy: training the caller's model afterwards cannot poison the cache
    copy = type(model)()
    copy.load_state_dict(model.state_dict())
    ev = sl.explore.Evaluator(copy, (x, y), cache=tmp_path, latency_repeats=0)
    with torch.no_grad():
        for p in copy.parameters():
            p.zero_()
    row = ev.evaluate(r)
    assert row.value > 0.5  # measured on the weights the key names, not the zeroed ones
    assert ev.with_settings(latency_repeats=0).key(r) == ev.key(r)


def test_a_failing_point_keeps_the_others(small, tmp_path, monkeypatch):
    model, data = small
    import squeezelab.engine.explore.sweep as sw

    real = sw.run_point

    def fails_for_two_bits(task, *args):
        if task.recipe == grid_recipe(2, 0.5):
            raise RuntimeError("kernel crashed")
        return real(task, *args)

    monkeypatch.setattr(sw, "run_point", fails_for_two_bits)
    with pytest.raises(sw.SweepError, match=r"1 of 7 sweep points failed .*kernel crashed") as info:
        sweep(model, data, **GRID, cache=tmp_path, progress=False, latency_repeats=3)
    assert isinstance(info.value, sl.SqueezeError)
    assert len(info.value.sweep.table) == 6 and list(info.value.failures) == [grid_recipe(2, 0.5).label]
    assert len(ResultCache(tmp_path)) == 6


def test_misspelt_layer_names_fail_before_any_point_runs(small, tmp_path):
    model, data = small
    bad = sl.Recipe(quantization=sl.LinearQuantization(), runtime=sl.Simulated(), layers=(sl.LayerSetting(name="fc_typo", bits=4),))
    with pytest.raises(sl.errors.ConfigError, match="fc_typo"):
        sweep(model, data, **GRID, recipes=[bad], cache=tmp_path, progress=False)
    assert len(ResultCache(tmp_path)) == 0


def test_corrupt_entry_is_detected_and_recomputed(small, tmp_path):
    model, data = small
    first = sweep(model, data, bits=(4,), sparsity=(0.0,), cache=tmp_path, progress=False, latency_repeats=3)
    cache = ResultCache(tmp_path)
    ev = sl.explore.Evaluator(model, data, cache=tmp_path, latency_repeats=3)
    path = cache.path(ev.key(grid_recipe(4, 0.0)))
    text = path.read_text()
    entry = json.loads(text)
    entry["payload"]["accuracy"] = 0.123  # edited by hand: the checksum no longer matches
    path.write_text(json.dumps(entry))
    with pytest.warns(RuntimeWarning, match="corrupt"):
        again = sweep(model, data, bits=(4,), sparsity=(0.0,), cache=tmp_path, progress=False, latency_repeats=3)
    assert (again.hits, again.misses) == (1, 1)
    assert again.table.iloc[1]["accuracy"] == first.table.iloc[1]["accuracy"]
    path.write_text(text[: len(text) // 2])  # truncated
    with pytest.warns(RuntimeWarning, match="corrupt"):
        third = sweep(model, data, bits=(4,), sparsity=(0.0,), cache=tmp_path, progress=False, latency_repeats=3)
    assert third.misses == 1 and json.loads(path.read_text())["payload"]["accuracy"] == first.table.iloc[1]["accuracy"]
    path.write_bytes(b"\xff\xfe not even UTF-8")
    with pytest.warns(RuntimeWarning, match="corrupt"):
        fourth = sweep(model, data, bits=(4,), sparsity=(0.0,), cache=tmp_path, progress=False, latency_repeats=3)
    assert fourth.misses == 1


_KILLED_SWEEP = """
import sys, time, torch
import squeezelab.engine.explore.sweep as sw
from squeezelab.engine.zoo.digits import DigitsMLP
from squeezelab.engine.core.data import load_digits_split
model = DigitsMLP()
model.load_state_dict(torch.load(sys.argv[1]))
x, y = load_digits_split().test
real = sw.run_point
def slow(*args, **kwargs):  # slow enough that the parent can kill it mid-sweep
    time.sleep(0.4)
    return real(*args, **kwargs)
sw.run_point = slow
sw.sweep(model, (x[:200], y[:200]), bits=(8, 6, 4, 3, 2), sparsity=(0.0, 0.5), cache=sys.argv[2], progress=False, latency_repeats=3)
print("FINISHED")
"""


def test_sweep_killed_mid_way_resumes_where_it_stopped(small, tmp_path):
    model, data = small
    weights = tmp_path / "model.pt"
    torch.save(model.state_dict(), weights)
    cache_dir = tmp_path / "cache"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_SWEEP, str(weights), str(cache_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])},
    )
    deadline = time.monotonic() + 120
    while len(ResultCache(cache_dir)) < 4 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate()
    assert b"FINISHED" not in out, "the sweep finished before it could be killed"
    done = len(ResultCache(cache_dir))
    assert 4 <= done < 11, err.decode()[-2000:]
    resumed = sweep(model, data, bits=(8, 6, 4, 3, 2), sparsity=(0.0, 0.5), cache=cache_dir, progress=False, latency_repeats=3)
    assert (resumed.hits, resumed.misses) == (done, 11 - done)
    assert resumed.complete and len(resumed.table) == 11
    fresh = sweep(model, data, bits=(8, 6, 4, 3, 2), sparsity=(0.0, 0.5), cache=False, progress=False, latency_repeats=3)
    pd.testing.assert_frame_equal(resumed.table[DETERMINISTIC], fresh.table[DETERMINISTIC])


def test_ctrl_c_keeps_finished_points(small, tmp_path, monkeypatch):
    model, data = small
    import squeezelab.engine.explore.sweep as sw

    real, calls = sw.run_point, []

    def interrupted_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(sw, "run_point", interrupted_on_third)
    with pytest.raises(SweepInterrupted, match="2 of 7 points finished and cached") as info:
        sweep(model, data, **GRID, cache=tmp_path, progress=False, latency_repeats=3)
    assert isinstance(info.value, KeyboardInterrupt)
    partial = info.value.sweep
    assert not partial.complete and len(partial.table) == 2  # the baseline and the first point
    monkeypatch.setattr(sw, "run_point", real)
    resumed = sweep(model, data, **GRID, cache=tmp_path, progress=False, latency_repeats=3)
    assert (resumed.hits, resumed.misses) == (2, 5)


def test_process_pool_gives_the_serial_results(small, tmp_path):
    import concurrent.futures as cf
    import multiprocessing

    model, data = small
    serial = sweep(model, data, **GRID, cache=False, progress=False, latency_repeats=3)
    with cf.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        pooled = sweep(model, data, **GRID, cache=tmp_path, progress=False, latency_repeats=3, executor=pool)
    pd.testing.assert_frame_equal(serial.table[DETERMINISTIC], pooled.table[DETERMINISTIC])
    assert len(ResultCache(tmp_path)) == 7  # the parent stored every result as it arrived


def test_dask_executor_gives_the_serial_results(small, tmp_path):
    distributed = pytest.importorskip("distributed")  # the [distributed] extra; installed by the dev set-up
    model, data = small
    serial = sweep(model, data, **GRID, cache=False, progress=False, latency_repeats=3)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            dask = sweep(model, data, **GRID, cache=tmp_path, progress=False, latency_repeats=3, executor=client.get_executor())
    pd.testing.assert_frame_equal(serial.table[DETERMINISTIC], dask.table[DETERMINISTIC])


def test_pareto_on_a_hand_made_table():
    t = pd.DataFrame(
        {
            "size_bytes": [100, 50, 50, 30, 80, 10, 30],
            "accuracy": [0.98, 0.97, 0.95, 0.90, 0.96, 0.50, np.nan],
            "latency_ms": [1.0, 2.0, 0.5, 0.5, 3.0, 0.4, 0.1],
        }
    )
    # 4 (80, 0.96) is beaten by 1 (50, 0.97); 2 (50, 0.95) ties on size with 1 and is less accurate;
    # the NaN row is left out.
    assert pareto_front(t, "size_bytes", "accuracy").index.tolist() == [5, 3, 1, 0]
    assert pareto_front(t, "latency_ms", "accuracy").index.tolist() == [5, 2, 0]
    dup = pd.DataFrame({"size_bytes": [10, 10], "accuracy": [0.9, 0.9]})
    assert len(pareto_front(dup)) == 2  # equal points do not dominate each other
    with pytest.raises(sl.errors.ConfigError, match="no column 'bytes'"):
        pareto_front(t, "bytes", "accuracy")


def test_sweep_pareto_and_best(small, tmp_path):
    model, data = small
    s = sweep(model, data, **GRID, cache=tmp_path, progress=False, latency_repeats=3)
    front = s.pareto()
    assert front["size_bytes"].is_monotonic_increasing and front["accuracy"].is_monotonic_increasing
    for _, row in s.table.iterrows():  # nothing off the frontier beats a frontier point on both axes
        assert not ((front["size_bytes"] > row["size_bytes"]) & (front["accuracy"] < row["accuracy"])).any()
    assert s.pareto(executable_only=True).index.tolist() == [0]  # only the fp32 baseline runs for real here
    best = s.best(max_accuracy_drop=0.02)
    ok = s.table[s.table["accuracy_drop"] <= 0.02]
    assert best["size_bytes"] == ok["size_bytes"].min()


def test_sweep_never_changes_the_model_or_data(small, tmp_path):
    model, (x, y) = small
    before, xb = state_hash(model), x.copy()
    sweep(model, (x, y), bits=(4,), sparsity=(0.5,), pruning="structured", cache=tmp_path, progress=False, latency_repeats=3)
    assert state_hash(model) == before and np.array_equal(x, xb)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(bits=(4,), runtime="int8-static"), "stores 8 bits"),
        (dict(sparsity=(1.0,)), r"sparsity=1.0 must be a number in \[0, 1\)"),
        (dict(quantization="linear-int"), "quantization='linear-int'; use one of"),
        (dict(pruning="random"), "pruning='random'"),
        (dict(pruning="n:m", sparsity=(0.6,)), "N:M pruning with m=4 gives sparsity"),
        (dict(cache=42), "cache=42"),
    ],
)
def test_bad_sweep_arguments_fail_before_any_work(small, kwargs, message):
    model, data = small
    with pytest.raises(sl.errors.ConfigError, match=message):
        sweep(model, data, progress=False, **{"cache": False, **kwargs})


def test_executable_grids_int8_and_structured(small, tmp_path):
    model, data = small
    s = sweep(model, data, bits=(8, 32), sparsity=(0.0, 0.5), pruning="structured", runtime="int8-dynamic", cache=tmp_path, progress=False, latency_repeats=6)
    assert s.table["executable"].all()
    labels = s.table["label"].tolist()
    assert labels[0] == "fp32" and "int8-dynamic" in labels and "channels50%-l1" in labels
    assert s.table.set_index("label").loc["channels50%-l1", "size_bytes"] < s.table.iloc[0]["size_bytes"] * 0.6
    assert s.table["speedup"].notna().all()
    # every speedup carries the interval of its median (6 rounds: the extremes at 95%)
    assert (s.table["speedup_low"] <= s.table["speedup"]).all() and (s.table["speedup"] <= s.table["speedup_high"]).all()
    assert s.table.iloc[0][["speedup", "speedup_low", "speedup_high"]].tolist() == [1.0, 1.0, 1.0]


def conv_net() -> torch.nn.Module:
    """A CNN whose weights are 94 % convolution: dynamic int8 (MatMul/Gemm/Gather) would leave them float."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 10),
    ).eval()


def test_an_onnx_cnns_default_sweep_holds_only_what_applies_and_says_what_it_left_out(digits_cnn, tmp_path):
    _, split = digits_cnn
    x, y = split.x_test[:40], split.y_test[:40]
    path = sl.compress(conv_net(), example_inputs=x[:1]).save(tmp_path / "cnn.onnx")
    s = sweep(path, (x, y), cache=tmp_path / "cache", progress=False, rounds=0)
    assert s.table["label"].tolist() == ["fp32", "float16"] and s.table["executable"].all()
    why = {reason.label: reason for reason in s.left_out}
    assert set(why) == {"the bits x sparsity grid", "int8-dynamic", "int8-static-minmax-perchannel"}
    assert "leaves the convolutions float" in why["int8-dynamic"].why and "Conv 94%" in why["int8-dynamic"].why
    assert "Int8Static() with calibration_data=" in why["int8-dynamic"].fix and "--calibration" in why["int8-dynamic"].cli_fix
    assert "calibration_data=" in why["int8-static-minmax-perchannel"].fix
    assert "no PyTorch layers" in why["the bits x sparsity grid"].why
    assert set(s.table.attrs["left_out"]) == set(why) and "left out of the default grid: int8-dynamic" in repr(s)
    # With calibration inputs, static int8 applies; the table and its repr say where it was calibrated.
    calibrated = sweep(path, (x, y), calibration_data=split.x_train[:16], cache=tmp_path / "cache", progress=False, rounds=0)
    assert calibrated.table["label"].tolist() == ["fp32", "int8-static-minmax-perchannel", "float16"]
    note = "static int8 calibrated on the 16 calibration_data inputs, kept apart from the 40 samples evaluated"
    assert calibrated.table.attrs["calibration"] == note and note in repr(calibrated)
    assert "calibration" not in s.table.attrs


def test_an_onnx_mlps_default_sweep_keeps_dynamic_int8(digits_mlp, tmp_path):
    model, split = digits_mlp
    path = sl.compress(model, example_inputs=split.x_test[:1]).save(tmp_path / "mlp.onnx")
    s = sweep(path, (split.x_test[:40], split.y_test[:40]), cache=False, progress=False, rounds=0)
    assert s.table["label"].tolist() == ["fp32", "int8-dynamic", "float16"]
    assert [reason.label for reason in s.left_out] == ["the bits x sparsity grid", "int8-static-minmax-perchannel"]


@pytest.mark.parametrize(
    "source, kwargs, words",
    [
        ("onnx", dict(bits=[], sparsity=[], recipes=[sl.Recipe(runtime=sl.Int8Dynamic())]), ["Conv 94%", "Int8Static()"]),
        ("torch", dict(runtime="int8-dynamic"), ["convolutions 94%", "leaves the convolutions float", "Int8Static()"]),
        ("onnx", dict(bits=[4]), ["no PyTorch layers", "Recipe(runtime=Int8Static())"]),
    ],
)
def test_an_explicit_point_that_cannot_run_is_refused_before_any_work(tmp_path, monkeypatch, source, kwargs, words):
    import squeezelab.engine.explore.evaluation as evaluation
    import squeezelab.engine.explore.sweep as sweeping

    def never(*args, **kw):
        raise AssertionError("a point was measured before the recipe was refused")

    monkeypatch.setattr(evaluation, "run_point", never)
    monkeypatch.setattr(sweeping, "run_point", never)
    x = np.random.default_rng(0).standard_normal((8, 1, 8, 8)).astype(np.float32)
    model = conv_net()
    target = sl.compress(model, example_inputs=x[:1]).save(tmp_path / "cnn.onnx") if source == "onnx" else model
    with pytest.raises(sl.errors.ConfigError) as refused:
        sweep(target, (x, None), cache=tmp_path / "cache", progress=False, **kwargs)
    assert all(w in str(refused.value) for w in words) and "does not apply" in str(refused.value)
    assert not (tmp_path / "cache").exists()


def test_default_widths_follow_the_runtime(small):
    from squeezelab.engine.explore.grid import Grid, build_grid as _grid

    model, _ = small
    for runtime, widths in ((None, {8, 6, 4, 3, 2}), ("int8-dynamic", {8}), ("weight-only", {8, 4})):
        points, left = _grid(model, Grid(runtime=runtime), calibrated=False)
        assert {info["bits"] for _, info in points[1:]} == widths and not left
        assert {info["sparsity"] for _, info in points[1:]} == {0.0, 0.5, 0.75, 0.9}
