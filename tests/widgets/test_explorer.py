"""The explorer's widget state, without a browser: sliders re-compress, figures follow, latest wins."""

from __future__ import annotations

import threading
import time

import pytest

pytest.importorskip("ipywidgets")  # the [widgets] extra; the dev set-up installs it
pytest.importorskip("plotly")

from squeezelab.engine.core.recipe import Recipe  # noqa: E402
from squeezelab.engine.explore.grid import Grid  # noqa: E402
from squeezelab.engine.explore.sweep import grid_recipe, sweep  # noqa: E402
from squeezelab.widgets import Explorer  # noqa: E402
from squeezelab.widgets.tradeoff import traces_by_role  # noqa: E402
from tests.conftest import state_hash  # noqa: E402


@pytest.fixture
def explorer(digits_cnn, tmp_path):
    model, split = digits_cnn
    ex = Explorer(model, split.test, cache=tmp_path, progress=False, latency_repeats=3, calibration_data=split.x_train[:64])
    ex.wait()
    yield ex
    ex.close()


def current(ex, panel="size"):
    trace = traces_by_role(ex.figure, panel)["current"]
    return list(trace.x), list(trace.y)


def test_initial_point_and_labels(explorer):
    ex = explorer
    assert ex.bits_slider.description == "bit width" and ex.sparsity_slider.description == "sparsity"
    assert (ex.bits_slider.min, ex.bits_slider.max) == (2, 8)
    assert (ex.sparsity_slider.min, ex.sparsity_slider.max) == (0.0, 0.95)
    point = ex.current_point
    assert point.label == "linear8-sym-perchannel (simulated)"
    assert current(ex) == ([point.size_bytes], [point.value])
    assert "SIMULATED" in ex.panel.value and f"{point.size_bytes:,} B" in ex.panel.value
    # Labelled data: the metric is top-1 accuracy, in % and pp.
    assert "top-1 accuracy" in ex.panel.value and f"{100 * point.value:.2f} %" in ex.panel.value
    assert ex.figure.layout.yaxis.title.text == "top-1 accuracy" and ex.figure.layout.yaxis.tickformat == ".1%"
    assert " pp" in traces_by_role(ex.figure, "size")["current"].text[0]
    baseline = traces_by_role(ex.figure, "size")["baseline"]
    assert list(baseline.x) == [ex.baseline.size_bytes] and list(baseline.y) == [ex.baseline.value]


def test_slider_recompresses_and_moves_the_current_point(explorer):
    ex = explorer
    figure, traces = ex.figure, len(ex.figure.data)
    ex.bits_slider.value = 4
    ex.wait()
    assert ex.current_point.label == "linear4-sym-perchannel (simulated)"
    assert current(ex)[0] == [ex.current_point.size_bytes] and ex.current_point.size_bytes < 30_000
    ex.sparsity_slider.value = 0.5
    ex.wait()
    assert ex.current_point.label.startswith("magnitude50%-layer + linear4")
    assert ex.current_point.weight_sparsity >= 0.5
    # every evaluated point stays on the plot; the figure is the same object with the same traces
    simulated = traces_by_role(ex.figure, "size")["simulated"]
    assert len(simulated.x) == 3
    assert ex.figure is figure and len(ex.figure.data) == traces
    assert current(ex, "latency")[0] == [ex.current_point.latency_ms]


def test_cached_point_updates_synchronously_without_measuring(explorer, monkeypatch):
    ex = explorer
    ex.bits_slider.value = 4
    ex.wait()
    ex.timings.clear()

    def no_measuring(recipe, progress=None):
        raise AssertionError(f"{recipe.label} is cached: it must be drawn, not measured")

    # What keeps a cached point fast on every machine: no compressing, evaluating or timing, only drawing.
    # (How fast that is depends on the machine; ``timings`` records it, no test asserts it.)
    monkeypatch.setattr(ex.evaluator, "evaluate", no_measuring)
    for i in range(20):
        ex.bits_slider.value = 8 if i % 2 == 0 else 4
        # no wait(): a cached point is drawn before the assignment returns
        expected = 8 if i % 2 == 0 else 4
        assert ex.current_point.label == f"linear{expected}-sym-perchannel (simulated)"
        assert current(ex)[0] == [ex.current_point.size_bytes]
        assert ex.error is None and "measuring" not in ex.status.value
    assert len(ex.timings) == 20 and all(t >= 0 for t in ex.timings)


def test_latest_choice_wins_and_stale_results_never_overwrite_it(explorer, monkeypatch):
    ex = explorer
    real = ex.evaluator.evaluate
    started, poke, poked, release = (threading.Event() for _ in range(4))

    def slow_for_two_bits(recipe, progress=None):
        if recipe == grid_recipe(2, 0.0):
            started.set()
            poke.wait(10)
            progress("evaluating", 0.5)  # while the newest choice waits: it says whose progress this is
            poked.set()
            release.wait(10)
            progress("timing", 0.5)  # once the newest choice is shown: it must not overwrite its status
        return real(recipe, progress=progress)

    monkeypatch.setattr(ex.evaluator, "evaluate", slow_for_two_bits)
    ex.bits_slider.value = 2  # uncached and slow: measured on the worker thread
    assert started.wait(10)
    for b in (3, 5, 6):  # rapid changes while it runs: only the newest is measured next
        ex.bits_slider.value = b
    assert "an earlier choice" not in ex.status.value and "linear6" in ex.status.value  # the newest choice waits
    poke.set()
    assert poked.wait(10)
    assert "measuring <b>linear2-sym-perchannel (simulated)</b> (an earlier choice; yours is next): evaluating" in ex.status.value
    ex.bits_slider.value = 8  # cached: shown at once
    assert ex.current_point.label == "linear8-sym-perchannel (simulated)"
    release.set()
    time.sleep(0.2)
    ex.wait()
    assert ex.current_point.label == "linear8-sym-perchannel (simulated)"  # the stale 2-bit result did not take over
    assert current(ex)[0] == [ex.current_point.size_bytes]
    assert "showing <b>linear8" in ex.status.value and "timing" not in ex.status.value
    measured = {p.label for p in ex._points.values()}
    assert "linear2-sym-perchannel (simulated)" in measured  # still measured, cached and plotted
    assert not {"linear3-sym-perchannel (simulated)", "linear5-sym-perchannel (simulated)"} & measured  # skipped


def test_kernel_stays_free_while_a_point_is_measured(explorer, monkeypatch):
    ex = explorer
    real = ex.evaluator.evaluate
    release = threading.Event()
    finished = threading.Event()

    def blocked(recipe, progress=None):
        release.wait(10)
        point = real(recipe)
        finished.set()
        return point

    monkeypatch.setattr(ex.evaluator, "evaluate", blocked)
    ex.bits_slider.value = 3
    # returned while the point is still being measured (measured here, it would have finished first)
    assert not finished.is_set()
    assert "measuring" in ex.status.value
    release.set()
    ex.wait()
    assert ex.current_point.label == "linear3-sym-perchannel (simulated)"


def test_runtime_and_methods(explorer):
    ex = explorer
    ex.runtime.value = "int8-static"
    ex.wait()
    assert ex.bits_slider.disabled and ex.quantization.disabled
    assert ex.current_point.executable and "executable (ONNX Runtime)" in ex.panel.value
    executable = traces_by_role(ex.figure, "size")["executable"]
    assert len(executable.x) == 1 and executable.marker.symbol == "circle"
    assert traces_by_role(ex.figure, "size")["simulated"].marker.symbol == "diamond-open"
    assert "simulated" in traces_by_role(ex.figure, "size")["simulated"].name
    ex.runtime.value = "simulated"
    ex.quantization.value = "kmeans"
    ex.bits_slider.value = 3
    ex.wait()
    assert ex.current_point.label == "kmeans3 (simulated)"
    ex.pruning.value = "n:m"
    ex.sparsity_slider.value = 0.45  # snapped to the nearest N:M sparsity, 2:4
    ex.wait()
    assert ex.current_point.label.startswith("2:4-sparse + kmeans3")


def test_evaluation_errors_are_shown_not_raised(explorer, monkeypatch):
    ex = explorer

    def broken(recipe, progress=None):
        raise RuntimeError("ONNX Runtime refused the model")

    monkeypatch.setattr(ex.evaluator, "evaluate", broken)
    ex.bits_slider.value = 5
    ex.wait()
    assert "ONNX Runtime refused the model" in ex.status.value and ex.error
    assert ex.current_point.label == "linear8-sym-perchannel (simulated)"  # the figure still shows the last good point


def test_swept_points_are_cache_hits(digits_cnn, tmp_path, monkeypatch):
    model, split = digits_cnn
    sweep(model, split.test, bits=(8, 4, 2), sparsity=(0.0, 0.5), cache=tmp_path, progress=False, latency_repeats=3)
    import squeezelab.engine.explore.evaluation as evaluation

    def never(*args, **kwargs):
        raise AssertionError("a swept point was recomputed")

    monkeypatch.setattr(evaluation, "run_point", never)
    ex = Explorer(model, split.test, cache=tmp_path, progress=False, latency_repeats=3)
    try:
        assert len(traces_by_role(ex.figure, "size")["simulated"].x) == 6  # the whole swept grid is drawn at once
        ex.bits_slider.value = 2
        ex.sparsity_slider.value = 0.5
        assert ex.current_point.cached and ex.current_point.label.startswith("magnitude50%-layer + linear2")
    finally:
        ex.close()


def test_the_controls_start_where_the_grid_says(digits_cnn, tmp_path):
    model, split = digits_cnn
    ex = Explorer(model, split.test, grid=Grid(bits=4, sparsity=0.25, quantization="kmeans"), cache=tmp_path,
                  progress=False, rounds=0)
    try:
        ex.wait()
        assert (ex.bits_slider.value, ex.sparsity_slider.value, ex.quantization.value) == (4, 0.25, "kmeans")
        assert ex.current_point.recipe == grid_recipe(4, 0.25, quantization="kmeans").to_dict()
    finally:
        ex.close()


def test_explorer_leaves_model_and_data_alone_and_closes(digits_cnn, tmp_path):
    import ipywidgets as w

    model, split = digits_cnn
    before, x0 = state_hash(model), split.x_test.copy()
    ex = Explorer(model, split.test, cache=tmp_path, progress=False, latency_repeats=3)
    ex.bits_slider.value = 6
    ex.wait()
    bundle = ex._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    ids = [ex.widget.model_id, ex.figure.model_id, ex.bits_slider.model_id]
    ex.close()
    assert not set(ids) & set(w.widgets.widget._instances)  # closed widgets leave the registry
    assert state_hash(model) == before and (split.x_test == x0).all()


def test_per_layer_views_open_lazily_and_follow_the_controls(explorer):
    ex = explorer
    views = ex.layer_views
    assert views.figure is None  # no second FigureWidget until the views are opened
    views.accordion.selected_index = 0
    ex.wait()  # the sensitivity table is measured on the worker thread
    heatmap = next(t for t in views.figure.data if t.meta["role"] == "sensitivity")
    table = views.table(compute=False)
    assert list(heatmap.y) == list(dict.fromkeys(table["layer"]))
    bits = table[table["axis"] == "bits"]
    row = bits[(bits["layer"] == heatmap.y[-1]) & (bits["value"] == 2)].iloc[0]
    assert heatmap.z[-1][list(heatmap.x).index("2")] == pytest.approx(row["accuracy_drop"] * 100)  # top-1: pp
    assert heatmap.colorbar.title.text == "drop (pp)"
    figure = views.figure
    ex.quantization.value = "kmeans"
    ex.bits_slider.value = 3
    ex.wait()
    views.layer_choice.value = "classifier.1"
    ex.wait()
    levels = next(t for t in views.figure.data if t.meta["role"] == "levels")
    assert len(levels.meta["values"]) == 8  # 3-bit k-means: the layer's 8 centroids
    views.axis_choice.value = "sparsity"
    heatmap = next(t for t in views.figure.data if t.meta["role"] == "sensitivity")
    assert heatmap.meta["axis"] == "sparsity"
    assert views.figure is figure


def test_save_report_writes_the_explored_points(explorer, tmp_path):
    ex = explorer
    ex.bits_slider.value = 4
    ex.wait()
    path = ex.save_report(tmp_path / "explored.html")
    text = path.read_text()
    assert "linear4-sym-perchannel (simulated)" in text and "linear8-sym-perchannel (simulated)" in text
    assert text.count("plotly.js v") <= 2  # inlined once (its banner), never linked
    with pytest.raises(Exception, match="overwrite=True"):
        ex.save_report(path)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(quantization="int4"), r"quantization='int4'; use one of 'linear-symmetric', .*'float16'"),
        (dict(pruning="random"), r"pruning='random'; use one of 'magnitude', 'structured', 'n:m'"),
        (dict(runtime="tensorrt"), r"runtime='tensorrt'; use one of 'simulated', 'simulated-huffman', 'int8-dynamic', 'int8-static'"),
        (dict(bits=1), r"bits=1 is outside the bit-width slider's range 2..8; pass one of \[2, 3, 4, 5, 6, 7, 8\]"),
        (dict(bits=16), r"bits=16 is outside the bit-width slider's range 2..8"),
        (dict(bits="8"), r"bits=.8. is not a number or a list of numbers"),
        (dict(sparsity=0.99), r"sparsity=0.99 is outside the sparsity slider's range 0..0.95"),
        (dict(grid=Grid(bits=[8, 4])), r"bits=\[8, 4\]: the explorer starts at one position of its slider; pass one value"),
        (dict(grid=Grid(recipes=[Recipe()])), r"Grid\(recipes=...\) has 1 recipe\(s\): the explorer starts from one position"),
        (dict(grid=Grid(bits=3), bits=9), r"bits=9 is outside the bit-width slider's range 2..8"),
        (dict(sparsity=float("nan")), r"sparsity=nan must be a number in \[0, 1\)"),
        (dict(latency_repeats=-1), r"latency_repeats=-1 is not allowed: it must be an integer >= 0"),
        (dict(latency_repeats=2.5), r"latency_repeats=2.5 is not allowed"),
        (dict(rounds=-2), r"rounds=-2 is not allowed: it must be an integer >= 0"),
        (dict(metric="cosinus"), r"metric='cosinus'; use one of .*cosine_to_baseline"),
        (dict(batch_sise=4), r"Explorer got unknown keyword\(s\) \[.batch_sise.\]: Grid.s fields are .*; Settings. \(how to measure\) are .*.batch_size."),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_measured(digits_cnn, tmp_path, monkeypatch, kwargs, message):
    import squeezelab as sl
    import squeezelab.engine.explore.evaluation as evaluation

    def never(*args, **kwargs):
        raise AssertionError("the explorer measured a point before refusing its arguments")

    monkeypatch.setattr(evaluation, "run_point", never)
    model, split = digits_cnn
    folder = tmp_path / "cache"
    with pytest.raises(sl.errors.ConfigError, match=message):
        Explorer(model, split.test, cache=folder, progress=False, **kwargs)
    assert not folder.exists()  # not even the baseline was looked up


def test_static_int8_needs_calibration_data_here_as_everywhere(digits_cnn, tmp_path):
    import squeezelab as sl

    model, split = digits_cnn
    folder = tmp_path / "cache"
    with pytest.raises(sl.errors.CalibrationError, match=r"calibration_data=None; pass calibration_data="):
        Explorer(model, split.test, cache=folder, progress=False, runtime="int8-static")
    assert not folder.exists()  # refused before anything was measured
    ex = Explorer(model, split.test, cache=folder, progress=False, rounds=0)
    try:
        ex.wait()
        ex.runtime.value = "int8-static"  # picked later: the widget shows the refusal, keeps the last point
        ex.wait()
        assert "calibration_data=None" in ex.error and "calibration_data=None" in ex.status.value
        assert ex.current_point.label == "linear8-sym-perchannel (simulated)"
    finally:
        ex.close()


def test_the_latency_panel_draws_the_times_it_is_given(digits_cnn, tmp_path, timed_by_size):
    """An injected cost model reaches the explorer's worker thread: the latency panel shows the modelled times."""
    model, split = digits_cnn
    ex = Explorer(model, split.test, cache=tmp_path, progress=False, latency_repeats=3)
    try:
        ex.wait()
        ex.runtime.value = "int8-dynamic"
        ex.wait()
        point = ex.current_point
        assert point.latency_ms == pytest.approx(10.0 * point.size_bytes / 1e6)  # CostModel.by_size(): 10 ms per MB
        assert point.details["timing"].startswith("cost model") and not point.cached
        assert current(ex, "latency")[0] == [point.latency_ms]
        assert ex.baseline.latency_ms == pytest.approx(10.0 * ex.baseline.size_bytes / 1e6)
    finally:
        ex.close()


def test_an_onnx_file_opens_on_the_first_runtime_that_applies_to_it(digits_cnn, digits_mlp, tmp_path):
    import torch

    import squeezelab as sl
    from squeezelab.widgets.explorer import onnx_default_runtime

    _, split = digits_cnn
    torch.manual_seed(0)
    conv = torch.nn.Sequential(  # 94 % of the weights in convolutions: dynamic int8 would leave them float
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 10),
    ).eval()
    cnn = sl.compress(conv, example_inputs=split.x_test[:1]).save(tmp_path / "cnn.onnx")
    mlp = sl.compress(digits_mlp[0], example_inputs=split.x_test[:1]).save(tmp_path / "mlp.onnx")
    assert [onnx_default_runtime(cnn, calibrated) for calibrated in (False, True)] == ["float16", "int8-static"]
    assert [onnx_default_runtime(mlp, calibrated) for calibrated in (False, True)] == ["int8-dynamic", "int8-static"]
    ex = Explorer(cnn, (split.x_test[:32], split.y_test[:32]), cache=tmp_path / "cache", progress=False, rounds=0)
    try:
        assert ex.runtime.value == "float16"
        ex.wait()
        assert ex.error is None and ex.current_point.label == "float16" and ex.current_point.executable
    finally:
        ex.close()
