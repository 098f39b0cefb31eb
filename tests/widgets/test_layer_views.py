"""Per-layer views: sensitivity heatmap, quantization levels, weight histogram, the two-panel figure.

Oracles: the heatmap's cells are the table's drops; k-means levels are the
centroids ``kmeans_quantize`` finds and the values the quantized model holds;
linear and fixed-point levels contain every value the encoder decodes to.
"""

from __future__ import annotations

import doctest
import html
import importlib

import numpy as np
import pandas as pd
import pytest
import torch

from squeezelab.engine.quantization.encoding import encode_tensor
from squeezelab.engine.core.errors import ConfigError
from squeezelab.engine.quantization import kmeans_quantize
from squeezelab.engine.quantization.simulated import quantize
from squeezelab.engine.core.quantizers import FixedPoint, Float16, KMeansQuantization, LinearQuantization, PerTensor
from squeezelab.widgets.heatmap import sensitivity_heatmap
from squeezelab.widgets.histogram import MAX_DRAWN_LEVELS, weight_histogram
from squeezelab.widgets.layer_views import layer_figure, update_layer_views
from squeezelab.widgets.levels import QuantizationLevels, quantization_levels

EVIL = "<script>alert(1)</script>"


def sensitivity_table(scale: float = 1.0) -> pd.DataFrame:
    """Three layers (one with a hostile name) at three widths and two sparsities; drops differ per cell."""
    rows = []
    for i, (layer, params) in enumerate([("features.0", 144), ("0", 4608), (EVIL, 640)]):
        for j, bits in enumerate((8, 4, 2)):
            drop = scale * (0.001 * (i + 1) + 0.05 * j) - (0.002 if (i, j) == (0, 0) else 0.0)  # one negative drop
            rows.append(dict(layer=layer, parameters=params, axis="bits", value=bits, accuracy=0.98 - drop, accuracy_drop=drop))
        for j, s in enumerate((0.5, 0.9)):
            drop = scale * (0.01 * (i + 1) + 0.2 * j)
            rows.append(dict(layer=layer, parameters=params, axis="sparsity", value=s, accuracy=0.98 - drop, accuracy_drop=drop))
    return pd.DataFrame(rows)


def heatmap_cells(fig) -> dict[tuple[str, str], float | None]:
    (trace,) = [t for t in fig.data if t.meta and t.meta["role"] == "sensitivity"]
    return {(html.unescape(y), x): z for y, row in zip(trace.y, trace.z) for x, z in zip(trace.x, row)}


def expected_cells(table: pd.DataFrame, axis: str) -> dict[tuple[str, str], float]:
    rows = table[table["axis"] == axis]
    fmt = (lambda v: f"{int(v)}") if axis == "bits" else (lambda v: f"{v * 100:g}%")
    return {(r["layer"], fmt(r["value"])): r["accuracy_drop"] * 100 for _, r in rows.iterrows()}


@pytest.mark.parametrize("module", ["heatmap", "histogram", "layer_views", "levels"])
def test_docstring_examples_run(module):
    module = importlib.import_module(f"squeezelab.widgets.{module}")
    assert doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE).failed == 0


@pytest.mark.parametrize("axis", ["bits", "sparsity"])
def test_heatmap_cells_are_the_tables_drops_in_percentage_points(axis):
    table = sensitivity_table()
    fig = sensitivity_heatmap(table, axis)
    cells = heatmap_cells(fig)
    expected = expected_cells(table, axis)
    assert cells.keys() == expected.keys()
    for key, value in expected.items():
        assert cells[key] == pytest.approx(value, abs=1e-12)
    (trace,) = fig.data
    # Layers in the table's order; more aggressive to the right.
    assert [html.unescape(y) for y in trace.y] == ["features.0", "0", EVIL]
    assert list(trace.x) == (["8", "4", "2"] if axis == "bits" else ["50%", "90%"])
    assert trace.zmid == 0  # diverging scale centred on "no change": a negative drop shows as a gain
    assert trace.texttemplate == "%{z:.2f}"
    # "0" must stay a layer name, not become the number 0.
    assert fig.layout.yaxis.type == "category" and fig.layout.xaxis.type == "category"


def test_heatmap_escapes_layer_names_everywhere():
    fig = sensitivity_heatmap(sensitivity_table(), "bits")
    text = fig.to_json()
    decoded = text.replace("\\u003c", "<").replace("\\u003e", ">").replace("\\u002f", "/")
    assert EVIL not in decoded
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in decoded


def test_missing_cells_are_none_and_bad_tables_are_refused():
    table = sensitivity_table()
    table = table.drop(index=table[(table["layer"] == "0") & (table["value"] == 4)].index)
    cells = heatmap_cells(sensitivity_heatmap(table, "bits"))
    assert cells[("0", "4")] is None
    with pytest.raises(ConfigError, match="axis='width'"):
        sensitivity_heatmap(table, "width")
    with pytest.raises(ConfigError, match="accuracy_drop"):
        sensitivity_heatmap(table.drop(columns="accuracy_drop"), "bits")
    with pytest.raises(ConfigError, match="more than once"):
        sensitivity_heatmap(pd.concat([table, table.iloc[:1]]), "bits")


def test_heatmap_updates_in_place():
    fig = sensitivity_heatmap(sensitivity_table(), "bits")
    before = len(fig.data)
    again = sensitivity_heatmap(sensitivity_table(scale=2.0), "sparsity", figure=fig)
    assert again is fig and len(fig.data) == before
    expected = expected_cells(sensitivity_table(scale=2.0), "sparsity")
    cells = heatmap_cells(fig)
    assert cells.keys() == expected.keys()
    assert all(cells[k] == pytest.approx(v) for k, v in expected.items())


# --------------------------------------------------------------------------- levels


@pytest.fixture(scope="module")
def conv_weight(digits_cnn) -> torch.Tensor:
    model, _ = digits_cnn
    return model.features[2].weight.detach().clone()  # (32, 16, 3, 3)


@pytest.mark.parametrize("bits", [2, 4])
def test_kmeans_levels_are_the_layers_centroids(digits_cnn, bits):
    model, _ = digits_cnn
    config = KMeansQuantization(bits=bits)
    for name in ("features.2", "classifier.3"):
        weight = model.get_submodule(name).weight
        levels = quantization_levels(weight, config)
        codebook, _ = kmeans_quantize(weight, bits=bits)
        np.testing.assert_array_equal(levels.values, np.sort(codebook.astype(np.float64)))
        # The same values the quantized model computes with (every centroid holds some weight).
        quantized = quantize(model, config, filter_fn=lambda module, fqn, name=name: fqn == name)
        held = np.unique(quantized.get_submodule(name).weight.detach().numpy())
        np.testing.assert_array_equal(levels.values.astype(np.float32), held)
        assert len(levels) == 2**bits and levels.channel is None and levels.method == config.label


def test_linear_4bit_symmetric_has_at_most_15_levels_from_the_widest_channel(conv_weight):
    config = LinearQuantization(bits=4, symmetric=True)
    levels = quantization_levels(conv_weight, config)
    assert len(levels) <= 15
    absmax = conv_weight.abs().amax(dim=(1, 2, 3))
    assert levels.channel == int(torch.argmax(absmax))
    assert "channel" in levels.note and str(levels.channel) in levels.note
    # Symmetric narrow range: -7..7 steps of scale, spanning the channel's largest magnitude.
    np.testing.assert_allclose(levels.values, -levels.values[::-1], atol=1e-7)
    assert levels.values.max() == pytest.approx(float(absmax.max()), rel=1e-6)
    assert 0.0 in levels.values
    # Every value that channel decodes to is a level.
    decoded = encode_tensor(conv_weight, config).decode()[levels.channel].numpy()
    assert set(np.unique(decoded).tolist()) <= set(levels.values.astype(np.float32).tolist())


def test_linear_per_tensor_and_affine_levels(conv_weight):
    per_tensor = quantization_levels(conv_weight, LinearQuantization(bits=3, granularity=PerTensor()))
    assert per_tensor.channel is None and len(per_tensor) <= 7
    decoded = np.unique(encode_tensor(conv_weight, LinearQuantization(bits=3, granularity=PerTensor())).decode().numpy())
    assert set(decoded.tolist()) <= set(per_tensor.values.astype(np.float32).tolist())
    affine = quantization_levels(conv_weight, LinearQuantization(bits=4, symmetric=False))
    assert len(affine) == 16 and 0.0 in affine.values  # zero stays exact


def test_fixed_point_levels_are_the_qmn_grid_within_the_weights_range(conv_weight):
    config = FixedPoint(total_bits=6)
    levels = quantization_levels(conv_weight, config)
    step = 2.0 ** -levels.frac_bits
    np.testing.assert_allclose(np.diff(levels.values), step)
    assert levels.values.min() >= float(conv_weight.min()) - step / 2
    assert levels.values.max() <= float(conv_weight.max()) + step / 2
    decoded = np.unique(encode_tensor(conv_weight, config).decode().numpy())
    assert set(decoded.tolist()) <= set(levels.values.astype(np.float32).tolist())
    # The grid runs from the code of the smallest weight to the code of the largest: both ends are used.
    assert (levels.values[0], levels.values[-1]) == (decoded[0], decoded[-1])
    assert f".{levels.frac_bits}" in levels.note


def test_levels_refuse_configs_without_a_short_list():
    with pytest.raises(ConfigError, match="Float16"):
        quantization_levels(torch.randn(4, 4), Float16())


# --------------------------------------------------------------------------- histogram


def line_positions(fig) -> list[float]:
    (lines,) = [t for t in fig.data if t.meta and t.meta["role"] == "levels"]
    return [x for x in lines.x if x is not None]


def test_histogram_counts_every_weight_and_draws_each_level_once(conv_weight):
    levels = quantization_levels(conv_weight, KMeansQuantization(bits=3))
    fig = weight_histogram(conv_weight, levels, layer=EVIL, method="kmeans3")
    (bars,) = [t for t in fig.data if t.meta["role"] == "weights"]
    assert sum(bars.y) == conv_weight.numel()
    positions = line_positions(fig)
    assert sorted(set(positions)) == pytest.approx(levels.values.tolist())
    assert len(positions) == 2 * len(levels)  # two ends per vertical line
    assert "&lt;script&gt;" in fig.layout.title.text and "<script>" not in fig.layout.title.text


def test_histogram_counts_but_does_not_draw_too_many_levels():
    weight = torch.linspace(-1, 1, 1000)
    levels = quantization_levels(weight, LinearQuantization(bits=12))
    assert len(levels) > MAX_DRAWN_LEVELS
    fig = weight_histogram(weight, levels, layer="fc", method="linear12")
    assert line_positions(fig) == []
    assert f"({len(levels)})" in fig.data[1].name and "too many" in fig.data[1].name


def test_histogram_updates_in_place(conv_weight):
    linear = quantization_levels(conv_weight, LinearQuantization(bits=4))
    kmeans = quantization_levels(conv_weight, KMeansQuantization(bits=4))
    fig = weight_histogram(conv_weight, linear, layer="features.2", method="linear4")
    n = len(fig.data)
    assert weight_histogram(conv_weight * 2, kmeans, layer="x", method="kmeans4", figure=fig) is fig
    assert len(fig.data) == n
    assert sorted(set(line_positions(fig))) == pytest.approx(kmeans.values.tolist())
    assert isinstance(kmeans, QuantizationLevels)


# --------------------------------------------------------------------------- both panels


@pytest.mark.parametrize("widget", [False, True])
def test_layer_figure_updates_in_place_with_a_fixed_set_of_traces(conv_weight, widget):
    fig = layer_figure(widget=widget)
    roles = [t.meta["role"] for t in fig.data]
    assert roles == ["sensitivity", "weights", "levels"]
    table = sensitivity_table()
    for axis, config in (("bits", LinearQuantization(bits=4)), ("sparsity", KMeansQuantization(bits=2))):
        levels = quantization_levels(conv_weight, config)
        update_layer_views(fig, table, axis, conv_weight, levels, "features.2", config.label)
        assert [t.meta["role"] for t in fig.data] == roles
        cells = heatmap_cells(fig)
        assert all(cells[k] == pytest.approx(v) for k, v in expected_cells(table, axis).items())
        assert sorted(set(line_positions(fig))) == pytest.approx(levels.values.tolist())
        titles = {a.name: a.text for a in fig.layout.annotations}
        assert config.label in titles["histogram_title"] and "sensitivity" in titles["sensitivity_title"]
    # The heatmap stays on the left panel, the histogram on the right.
    assert (fig.data[0].xaxis or "x") == "x" and fig.data[1].xaxis == "x2" and fig.data[2].xaxis == "x2"
    if widget:
        import plotly.graph_objects as go

        assert isinstance(fig, go.FigureWidget)


def test_layer_views_need_only_their_link_to_the_explorer(digits_cnn):
    """LayerViews talks to its explorer through ExplorerLink's callbacks: a stand-in link drives it fully
    (the table measured on the link's worker, drawn under its lock, the status line written), and a closed
    link draws nothing."""
    from squeezelab.engine.core.recipe import Recipe
    from squeezelab.engine.explore.evaluation import Evaluator
    from squeezelab.engine.measurement.point import Settings
    from squeezelab.widgets._explorer_layers import ExplorerLink, LayerViews

    model, split = digits_cnn
    evaluator = Evaluator(model, split.test, Settings(rounds=2, warmup=0), cache=False)
    calls: dict[str, list] = {"status": [], "submitted": [], "drawn": []}
    closed = [False]

    def submit(work):
        calls["submitted"].append(work)
        work()  # the stand-in's "worker" runs at once

    def draw(paint):
        if not closed[0]:
            calls["drawn"].append(paint)
            paint()

    link = ExplorerLink(evaluator=evaluator, quantizer_choice=lambda: "linear-symmetric", recipe=lambda: Recipe(),
                        set_status=lambda text, busy=False: calls["status"].append((text, busy)), submit=submit,
                        draw=draw, closed=lambda: closed[0])
    views = LayerViews(link)
    views.accordion.selected_index = 0  # opening the accordion builds and draws
    assert views.built and len(calls["submitted"]) == 1 and len(calls["drawn"]) == 1
    assert [busy for _, busy in calls["status"]] == [True, False] and "layer sensitivity" in calls["status"][-1][0]
    table = views.table(compute=False)  # measured once, on the link's worker
    assert set(table["layer"]) == set(views.layer_choice.options)
    closed[0] = True
    views.axis_choice.value = "sparsity"  # a closed explorer: nothing more is drawn or submitted
    assert len(calls["drawn"]) == 1 and len(calls["submitted"]) == 1
