"""The explorer on a Hugging Face BertModel: dict inputs, a ModelOutput, no targets (cosine fidelity).

Oracles: the figures drawn are the Points the evaluator measured; labels say the metric's
name ("cosine to fp32") and never "accuracy" or "pp"; the progress widget shows the stages
the engine reports, driven by a monkeypatched slow ``evaluate`` (no timing assumptions).
"""

from __future__ import annotations

import re
import threading
import time

import pytest

pytest.importorskip("ipywidgets")  # the [widgets] extra; the dev set-up installs it
pytest.importorskip("plotly")
pytest.importorskip("transformers")

from squeezelab.engine.explore.sensitivity import layer_sensitivity  # noqa: E402
from squeezelab.engine.zoo import tiny_bert, tiny_bert_inputs  # noqa: E402
from squeezelab.widgets import Explorer  # noqa: E402
from squeezelab.widgets.tradeoff import traces_by_role  # noqa: E402
from tests.conftest import state_hash  # noqa: E402

UNITS = re.compile(r"\bpp\b|accuracy", re.IGNORECASE)


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    """ONNX Runtime's symbolic shape inference, failing on BERT graphs during int8 quantization, writes
    sym_shape_infer_temp.onnx and a <uuid>.data file into the working directory: keep them out of the repo."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def bert():
    """One encoder layer (7 Linear layers named encoder.layer.0...), 32 padded sequences, no targets."""
    return tiny_bert(num_hidden_layers=1), (tiny_bert_inputs(batch=32, seq=16), None)


@pytest.fixture
def explorer(bert, tmp_path):
    model, data = bert
    # static int8 calibrates on other sequences than the 32 it is judged on
    ex = Explorer(model, data, cache=tmp_path, rounds=2, calibration_data=tiny_bert_inputs(batch=8, seq=16, seed=5))
    ex.wait()
    yield ex
    ex.close()


def panel_cells(ex) -> dict[str, str]:
    return dict(re.findall(r"<th[^>]*>(.*?)</th><td>(.*?)</td>", ex.panel.value))


def test_bert_with_dict_inputs_and_no_targets_is_explored_by_cosine(explorer, bert):
    ex = explorer
    assert ex.evaluator.metric.name == "cosine to fp32" and ex.labels.name == "cosine to fp32"
    point = ex.current_point
    assert point.label == "linear8-sym-perchannel (simulated)" and point.metric == "cosine to fp32"
    assert current_xy(ex) == ([point.size_bytes], [point.value])
    assert 0.9 < point.value <= 1.0 + 1e-9  # 8-bit weights keep the embedding's direction
    # Every label names the metric; no "accuracy", no "pp", no % on the metric's figures.
    layout = ex.figure.layout
    assert layout.yaxis.title.text == "cosine to fp32" and layout.yaxis2.title.text == "cosine to fp32"
    assert not layout.yaxis.tickformat  # plain numbers, not %
    assert [a.text for a in layout.annotations] == ["cosine to fp32 vs size", "cosine to fp32 vs latency"]
    hover = traces_by_role(ex.figure, "size")["current"].text[0]
    assert f"cosine to fp32 {point.value:.4f} (drop {point.drop.drop:.4f})" in hover
    cells = panel_cells(ex)
    assert cells["cosine to fp32"] == f"{point.value:.4f}"
    assert cells["drop"].startswith(f"{point.drop.drop:.4f} (95% interval ")
    assert not UNITS.search(ex.panel.value) and not UNITS.search(hover)
    assert not any(UNITS.search(t) for t in traces_by_role(ex.figure, "latency")["baseline"].text)


def current_xy(ex, panel="size"):
    trace = traces_by_role(ex.figure, panel)["current"]
    return list(trace.x), list(trace.y)


def test_slider_moves_recompress_the_bert(explorer):
    ex = explorer
    eight = ex.current_point
    ex.bits_slider.value = 3
    ex.wait()
    three = ex.current_point
    assert three.label == "linear3-sym-perchannel (simulated)" and not three.cached
    assert three.size_bytes < eight.size_bytes and three.value < eight.value  # fewer bits: smaller, less faithful
    assert current_xy(ex) == ([three.size_bytes], [three.value])
    ex.runtime.value = "int8-static"  # int64 token ids through static int8 calibration
    ex.wait()
    assert ex.current_point.label.startswith("int8-static") and ex.current_point.executable
    ex.runtime.value = "int8-dynamic"  # the default quantizes the embeddings (Gather, half the weights) too
    ex.wait()
    assert ex.error is None and ex.current_point.label == "int8-dynamic" and ex.current_point.executable
    assert ex.current_point.size_bytes < eight.size_bytes
    assert len(ex.sweep()) == 5  # baseline, 8 bits, 3 bits, two int8 runtimes


def test_progress_shows_each_stage_of_an_uncached_point(explorer, monkeypatch):
    ex = explorer
    real = ex.evaluator.evaluate
    reached, go = threading.Event(), threading.Event()
    seen = []

    def slow(recipe, progress=None):
        for stage, done in (("compressing", 0.0), ("evaluating", 0.5), ("timing", 0.5)):
            progress(stage, done)
            seen.append((ex.progress.description, ex.progress.value, ex.progress.bar_style, ex.status.value))
            reached.set()
            assert go.wait(10)
            go.clear()
        return real(recipe, progress=progress)

    monkeypatch.setattr(ex.evaluator, "evaluate", slow)
    t0 = time.perf_counter()
    ex.bits_slider.value = 5
    assert time.perf_counter() - t0 < 1.0  # the kernel is free while the point is measured
    for _ in range(3):
        assert reached.wait(10)
        reached.clear()
        go.set()
    ex.wait()
    stages = [s[0] for s in seen]
    assert stages == ["compressing", "evaluating", "timing"]
    values = [s[1] for s in seen]
    assert values == sorted(values) and values[0] == 0.0 and values[-1] < 1.0  # forward, not done yet
    assert all(s[2] == "info" for s in seen)
    assert "measuring <b>linear5-sym-perchannel (simulated)</b>: compressing" in seen[0][3]
    assert "evaluating cosine to fp32: 16 of 32 samples" in seen[1][3]
    assert "timing: round 1 of 2, interleaved with the fp32 baseline" in seen[2][3]
    # Done: the bar is full, the status names the point drawn.
    assert (ex.progress.value, ex.progress.bar_style) == (1.0, "success")
    assert ex.current_point.label == "linear5-sym-perchannel (simulated)" and "showing" in ex.status.value


def test_a_new_explorer_shows_the_baseline_being_measured(bert, tmp_path, monkeypatch):
    """Without a cached baseline the constructor returns at once; the baseline is measured with progress."""
    import squeezelab.engine.explore.evaluation as evaluation

    model, data = bert
    release = threading.Event()
    real = evaluation.run_point

    def slow_run_point(task, key=None, progress=None):
        if progress is not None:
            progress("compressing", 0.0)
        release.wait(10)
        return real(task, key, progress)

    monkeypatch.setattr(evaluation, "run_point", slow_run_point)
    ex = Explorer(model, data, cache=tmp_path, rounds=2)
    try:
        deadline = time.monotonic() + 30  # the worker first computes the fp32 reference outputs
        while "compressing" not in ex.status.value and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ex.baseline is None and "measuring <b>fp32</b>: compressing" in ex.status.value
        ex.bits_slider.value = 4  # moved while the baseline runs: drawn once it is done
        release.set()
        ex.wait()
        assert ex.baseline.label == "fp32" and ex.current_point.label == "linear4-sym-perchannel (simulated)"
    finally:
        ex.close()


def test_per_layer_views_and_report_for_a_bert(explorer, bert, tmp_path):
    ex = explorer
    model, data = bert
    before = state_hash(model)
    table = layer_sensitivity(model, data, bits=(4,), sparsity=(0.5,), evaluator=ex.evaluator, progress=False)
    assert table.attrs["metric"] == "cosine to fp32" and "cosine_drop" in table
    ex.layer_views._tables[ex.layer_views.quantizer()] = table  # measured above with fewer probes than the default
    ex.layer_views.accordion.selected_index = 0
    ex.wait()
    views = ex.layer_views
    assert views.layer_choice.value == "encoder.layer.0.attention.self.query"
    heatmap = next(t for t in views.figure.data if t.meta["role"] == "sensitivity")
    assert "encoder.layer.0.attention.self.query" in heatmap.y and "pooler.dense" in heatmap.y
    assert heatmap.colorbar.title.text == "drop of cosine to fp32" and heatmap.texttemplate == "%{z:.3~g}"
    row = table[(table["layer"] == "encoder.layer.0.output.dense") & (table["axis"] == "bits")].iloc[0]
    assert heatmap.z[list(heatmap.y).index("encoder.layer.0.output.dense")][0] == pytest.approx(row["drop"])  # not x100
    assert not any(UNITS.search(h) for line in heatmap.text for h in line)
    histogram_title = next(a.text for a in views.figure.layout.annotations if a.name == "histogram_title")
    assert "encoder.layer.0.attention.self.query" in histogram_title
    ex.bits_slider.value = 4
    ex.wait()
    text = ex.save_report(tmp_path / "bert.html").read_text(encoding="utf-8")
    import plotly.offline

    page = text.replace(plotly.offline.get_plotlyjs(), "")
    assert "cosine to fp32" in page and "encoder.layer.0.attention.self.query" in page
    assert not UNITS.search(page), UNITS.search(page)
    assert f"<td>{ex.current_point.value:.4f}</td>" in page and "<th>drop of cosine to fp32</th>" in page
    assert state_hash(model) == before


def test_an_onnx_file_is_explored_with_onnx_runtimes_choices(bert, tmp_path):
    import squeezelab as sl

    model, data = bert
    path = sl.compress(model, sl.Recipe(), example_inputs=tiny_bert_inputs(batch=1, seq=16)).save(tmp_path / "bert.onnx")
    for kwargs, message in (
        (dict(runtime="simulated"), r"runtime='simulated' is not one of .* for an ONNX file: 'int8-dynamic', .*'float16'"),
        (dict(sparsity=0.5), r"sparsity=0.5 needs the PyTorch model"),
        (dict(quantization="kmeans"), r"quantization='kmeans' needs the PyTorch model"),
    ):
        with pytest.raises(sl.errors.ConfigError, match=message):
            Explorer(path, data, cache=tmp_path / "refused", **kwargs)
    assert not (tmp_path / "refused").exists()  # refused before the cache or the model was touched
    ex = Explorer(path, data, cache=tmp_path / "cache", rounds=2, runtime="float16")
    try:
        ex.wait()
        assert [v for _, v in ex.runtime.options] == ["int8-dynamic", "int8-static", "float16"]
        assert ex.bits_slider.disabled and ex.sparsity_slider.disabled and ex.quantization.disabled and ex.pruning.disabled
        assert ex.current_point.label == "float16" and ex.current_point.executable
        assert ex.current_point.value > 0.99 and ex.current_point.metric == "cosine to fp32"
        ex.runtime.value = "int8-dynamic"
        ex.wait()
        assert ex.current_point.executable and ex.current_point.size_bytes < ex.baseline.size_bytes / 2
        ex.layer_views.accordion.selected_index = 0
        assert "No per-layer views" in ex.layer_views._box.children[0].value
    finally:
        ex.close()


def test_a_metric_that_needs_targets_is_refused_before_anything_is_measured(bert, tmp_path, monkeypatch):
    import squeezelab as sl
    import squeezelab.engine.explore.evaluation as evaluation

    def never(*args, **kwargs):
        raise AssertionError("the explorer measured a point before refusing its metric")

    monkeypatch.setattr(evaluation, "run_point", never)
    model, data = bert
    with pytest.raises(sl.errors.DataError, match=r"metric 'top-1 accuracy' compares with targets, and the data has none.*cosine_to_baseline"):
        Explorer(model, data, metric="top1", cache=tmp_path / "cache")
