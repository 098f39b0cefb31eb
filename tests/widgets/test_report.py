"""The HTML report: one self-contained file, escaped, offline, never clobbering by accident (no browser here).

The browser half (it renders, the sliders work, nothing is fetched) is test_report_browser.py.
"""

from __future__ import annotations

import html
import json
import os
import re
from html.parser import HTMLParser

import pandas as pd
import plotly.offline
import pytest

import squeezelab as sl

from squeezelab.engine.core.errors import ConfigError
from squeezelab.engine.explore.pareto import SweepTable
from squeezelab.engine.core.quantizers import LinearQuantization
from squeezelab.engine.core.recipe import LayerSetting, Recipe
from squeezelab.engine.core.runtimes import Simulated
from squeezelab.engine.explore.sensitivity import layer_sensitivity
from squeezelab.engine.explore.sweep import sweep
from squeezelab.widgets.grid_figure import DODGE
from squeezelab.widgets.html_report import explore_figure, report
from squeezelab.engine.zoo import tiny_bert, tiny_bert_inputs

EVIL = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def small(digits_cnn, tmp_path_factory):
    """A 2x2 sweep and a real per-layer sensitivity table of the digits CNN (seconds, cached in tmp)."""
    model, split = digits_cnn
    cache = tmp_path_factory.mktemp("cache")
    result = sweep(model, split.test, bits=(8, 4), sparsity=(0.0, 0.5), cache=cache, progress=False)
    sens = layer_sensitivity(model, split.test, bits=(8, 4), sparsity=(0.5,), cache=cache, progress=False)
    return result, sens


class Tags(HTMLParser):
    """Every start tag with its attributes (script bodies are not parsed as markup)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def parse(text: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = Tags()
    parser.feed(text)
    return parser.tags


def json_unescaped(text: str) -> str:
    """The page with the JSON escapes Plotly uses undone: what plotly.js will see as strings."""
    return text.replace("\\u003c", "<").replace("\\u003e", ">").replace("\\u002f", "/").replace("\\/", "/")


def test_report_is_one_file_with_every_section(small, tmp_path, capsys):
    result, sens = small
    path = report(result, tmp_path / "r.html", current=3, sensitivity=sens)
    assert path == (tmp_path / "r.html").absolute() and path.is_file()
    text = path.read_text(encoding="utf-8")
    plotlyjs = plotly.offline.get_plotlyjs()
    assert text.count(plotlyjs) == 1
    scripts = [a for t, a in parse(text) if t == "script"]
    assert all("src" not in a for a in scripts)
    # Figures: trade-off, grid explorer, one heatmap per sensitivity axis; each drawn once.
    ids = re.findall(r'<div id="(squeezelab-[\w-]+)" class="plotly-graph-div"', text)
    assert ids == ["squeezelab-tradeoff", "squeezelab-explore", "squeezelab-sensitivity-bits", "squeezelab-sensitivity-sparsity"]
    assert text.count("Plotly.newPlot(") == len(ids)
    assert f'<meta name="squeezelab-figures" content="{len(ids)}">' in text
    for section in ("tradeoff", "explore", "pareto", "recipe", "sensitivity-bits", "table", "environment"):
        assert f'<section id="{section}">' in text
    # Pareto rows, the chosen recipe as TOML, environment, timestamp.
    for label in result.pareto("size_bytes")["label"]:
        assert html.escape(label) in text.split('<section id="pareto">')[1].split("</section>")[0]
    recipe = result.recipe(3)
    assert html.escape(recipe.to_toml().strip()) in text
    assert Recipe.from_toml(html.unescape(re.search(r"<pre><code>(.*?)</code></pre>", text, re.DOTALL).group(1))) == recipe
    assert "onnxruntime" in text and "int8_dot_product_exact" in text and "plotly" in text
    assert re.search(r'<time datetime="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00">', text)
    assert '"displaylogo": false' in text
    size = path.stat().st_size
    rest = size - len(plotlyjs.encode())
    assert rest < 150_000  # the report proper stays small next to plotly.js
    with capsys.disabled():
        print(f"\n[report] {size:,} bytes in all, {rest:,} bytes without plotly.js ({len(plotlyjs.encode()):,})")


def test_simulated_rows_are_labelled(small, tmp_path):
    result, _ = small
    text = report(result, tmp_path / "r.html").read_text(encoding="utf-8")
    table_html = text.split('<section id="table">')[1].split("</section>")[0]
    simulated = int(((result.table["kind"] == "simulated") & ~result.table["is_baseline"]).sum())
    assert simulated > 0
    assert table_html.count('<tr class="simulated') == simulated
    assert table_html.count('<span class="badge simulated">simulated</span>') == simulated + 1  # + the legend
    assert table_html.count("<tr") == len(result.table) + 1  # + header


def test_every_user_string_is_escaped_in_the_page_and_in_the_figures(small, tmp_path):
    result, sens = small
    table = result.table.copy()
    table.loc[1, "label"] = EVIL
    hostile = SweepTable(table)
    sens = sens.copy()
    sens.loc[sens["layer"] == "features.0", "layer"] = EVIL
    recipe = Recipe(
        quantization=LinearQuantization(bits=4), runtime=Simulated(), layers=(LayerSetting(name=EVIL, bits=8),)
    )
    text = report(hostile, tmp_path / "r.html", title=EVIL, recipe=recipe, current=1, sensitivity=sens).read_text(
        encoding="utf-8"
    )
    plotlyjs = plotly.offline.get_plotlyjs()
    page = json_unescaped(text.replace(plotlyjs, ""))
    assert "alert(1)" not in plotlyjs
    assert EVIL not in page and "<script>alert" not in page.lower()
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert f"<title>{escaped}</title>" in page and f"<h1>{escaped}</h1>" in page
    # In the figures' JSON: the hover text of the row, the heatmap's layer names.
    figures = page.split('<section id="table">')[0]
    assert figures.count(escaped) >= 3
    assert re.search(r'"y":\[[^\]]*"' + re.escape(escaped), figures)  # a heatmap row
    # In the recipe's TOML and label.
    recipe_html = page.split('<section id="recipe">')[1].split("</section>")[0]
    assert escaped in recipe_html and "layers" in recipe_html
    # The only scripts are plotly.js and Plotly's own newPlot calls.
    assert len([t for t, _ in parse(text) if t == "script"]) == 1 + text.count("Plotly.newPlot(")


def test_nothing_points_outside_the_file(small, tmp_path):
    result, sens = small
    text = report(result, tmp_path / "r.html", current=2, sensitivity=sens).read_text(encoding="utf-8")
    tags = parse(text)
    assert not [t for t, _ in tags if t in ("link", "iframe", "img", "object", "embed", "base")]
    for tag, attrs in tags:
        for name in ("src", "href", "action", "data", "poster"):
            value = (attrs.get(name) or "").strip().lower()
            assert not value.startswith(("http:", "https:", "//", "ftp:")), (tag, name, value)
    outside = json_unescaped(text.replace(plotly.offline.get_plotlyjs(), ""))
    assert "http://" not in outside and "https://" not in outside
    assert "mathjax" not in outside.lower()
    csp = [a["content"] for t, a in tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0]


def test_existing_file_is_refused_then_replaced_on_request(small, tmp_path):
    result, _ = small
    path = tmp_path / "r.html"
    path.write_text("keep me")
    with pytest.raises(ConfigError) as error:
        report(result, path)
    assert str(path) in str(error.value) and "overwrite=True" in str(error.value)
    assert path.read_text() == "keep me"
    assert report(result, path, overwrite=True) == path
    assert "Plotly.newPlot(" in path.read_text(encoding="utf-8")
    assert sorted(os.listdir(tmp_path)) == ["r.html"]  # no temporary file left behind
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)


def test_bad_arguments_name_the_fix(small, tmp_path):
    result, _ = small
    with pytest.raises(ConfigError, match="current=99"):
        report(result, tmp_path / "a.html", current=99)
    with pytest.raises(ConfigError, match="does not exist"):
        report(result, tmp_path / "missing" / "a.html")
    with pytest.raises(ConfigError, match="folder"):
        report(result, tmp_path)
    with pytest.raises(ConfigError, match="not a Recipe"):
        report(result, tmp_path / "a.html", recipe="linear4")
    assert os.listdir(tmp_path) == []


def test_the_callers_sweep_is_unchanged(small, tmp_path):
    result, sens = small
    table, before, sens_before = result.table, result.table.copy(deep=True), sens.copy(deep=True)
    report(result, tmp_path / "r.html", current=4, sensitivity=sens)
    assert result.table is table
    pd.testing.assert_frame_equal(result.table, before)
    pd.testing.assert_frame_equal(sens, sens_before)


def test_a_recipe_finds_its_row(small, tmp_path):
    result, _ = small
    text = report(result, tmp_path / "r.html", recipe=result.recipe(2)).read_text(encoding="utf-8")
    assert "(row 2)" in text and '<tr class="simulated current">' in text
    figure = json.loads(
        json_unescaped(re.search(r'Plotly.newPlot\(\s*"squeezelab-tradeoff",\s*(\[.*?\]),\s*\{', text, re.DOTALL).group(1))
    )
    ring = next(t for t in figure if t["meta"]["role"] == "current" and t["meta"]["panel"] == "size")
    assert ring["x"] == [float(result.table["size_bytes"].iloc[2])]


def test_the_sliders_steps_show_each_grid_point(small):
    """The explorer's slider steps, read as data: what each step would show is the table's numbers."""
    result, _ = small
    table = result.table
    fig = explore_figure(table, current=4)
    bits_slider, sparsity_slider = fig.layout.sliders
    assert [s.label for s in bits_slider.steps] == ["8", "4"]
    assert [s.label for s in sparsity_slider.steps] == ["0%", "50%"]
    # current=4 is 4 bits at 50%: the sliders start there and the figure shows it.
    assert (bits_slider.active, sparsity_slider.active) == (1, 1)
    roles = [(t.meta["role"], t.meta.get("panel"), t.meta.get("bits")) for t in fig.data]
    visible = [t.meta["bits"] for t in fig.data if t.meta["role"].startswith("selected") and t.visible]
    assert visible == [4, 4, 4]
    for step, bits in zip(bits_slider.steps, (8, 4)):
        flags, indices = step.args
        assert [roles[i][2] for i, on in zip(indices, flags["visible"]) if on] == [bits] * 3
    for step, s in zip(sparsity_slider.steps, (0.0, 0.5)):
        update, indices = step.args
        for i, x, y in zip(indices, update["x"], update["y"]):
            role, panel, bits = roles[i]
            row = table[(table["bits"] == bits) & (table["sparsity"] == s) & ~table["is_baseline"]].iloc[0]
            assert role == "selected_point"
            if panel == "sparsity":  # each width's marker is set DODGE * span to the side of its sparsity, no more
                assert abs(x[0] - s) <= DODGE * 0.5 and x[0] != s
                assert (x[0] < s) == (bits == 8)  # the widest first, to the left
            else:
                assert x == [float(row["size_bytes"])]
            assert y == [float(row["accuracy"])]


def test_figures_are_named_after_a_top1_sweeps_metric(small, tmp_path):
    """Top-1 accuracy is a percent metric: its cells in %, its drops in pp (a cosine's never: test_explorer_bert)."""
    result, sens = small
    text = report(result, tmp_path / "r.html", sensitivity=sens).read_text(encoding="utf-8")
    page = text.replace(plotly.offline.get_plotlyjs(), "")
    table_html = page.split('<section id="table">')[1].split("</section>")[0]
    assert "<th>top-1 accuracy</th>" in table_html and "<th>drop (pp)</th>" in table_html
    row = result.table.iloc[1]
    assert f"<td>{100 * row['value']:.2f} %</td>" in table_html and f"<td>{100 * row['drop']:.2f} pp</td>" in table_html
    assert "<h3>top-1 accuracy vs size</h3>" in page and "top-1 accuracy vs sparsity, per bit width" in page
    assert "drop of top-1 accuracy in percentage points" in page


# ---------------------------------------------------------------- reports that read right (issue #15)


def test_log_axes_name_their_ticks_1k_10k_100k():
    from squeezelab.widgets._axes import grid_axis, log_axis, log_ticks

    values, text, span = log_ticks([12_395, 155_008])
    assert text == ["10k", "20k", "50k", "100k", "200k"] and values[0] <= 12_395 and values[-1] >= 155_008
    assert span[0] < 4 < span[1]  # log10(10k) inside the range
    wide = log_ticks([900, 2_000_000])[1]
    assert wide == ["100", "1k", "10k", "100k", "1M", "10M"]  # the 1-2-5 series would give too many: decades
    assert log_axis([]) == {"type": "log"} and log_axis([0, None, float("nan")]) == {"type": "log"}
    axis = grid_axis([0.0, 0.5, 0.75])
    assert axis["ticktext"] == ["0%", "50%", "75%"] and 0.75 < axis["range"][1] < 0.8  # no 80% for a grid stopping at 75%


@pytest.fixture(scope="module")
def with_int8(digits_cnn, tmp_path_factory):
    """A sweep with executable int8 points beside simulated ones: the latency panel and table have rows."""
    from squeezelab.engine.core.runtimes import Int8Dynamic, Int8Static

    model, split = digits_cnn
    recipes = [Recipe(runtime=Int8Dynamic()), Recipe(runtime=Int8Static())]
    return sweep(model, split.test, bits=(4,), sparsity=(0.0, 0.5), recipes=recipes, rounds=5,
                 calibration_data=split.x_train[:128], cache=tmp_path_factory.mktemp("cache8"), progress=False)


def test_the_figures_use_readable_size_ticks_and_show_latency_spread(with_int8):
    from squeezelab.widgets.tradeoff import tradeoff_figure, traces_by_role, update_tradeoff

    result = with_int8
    fig = tradeoff_figure(widget=False)
    update_tradeoff(fig, result.table)
    assert fig.layout.xaxis.type == "log" and all(t[-1] in "kM" or t.isdigit() for t in fig.layout.xaxis.ticktext)
    assert any(t in fig.layout.xaxis.ticktext for t in ("1k", "10k", "100k", "1M"))
    assert "middle half" in fig.layout.xaxis2.title.text and "batch 1" in fig.layout.xaxis2.title.text
    spread = traces_by_role(fig, "latency")["executable"].error_x
    table = result.table[result.table["executable"].astype(bool) & ~result.table["is_baseline"].astype(bool)]
    assert spread.visible and len(spread.array) == len(table)
    assert all(h >= 0 for h in spread.array) and all(lo >= 0 for lo in spread.arrayminus)
    assert (table["latency_p25_ms"] <= table["latency_ms"]).all() and (table["latency_ms"] <= table["latency_p75_ms"]).all()


def test_the_chosen_recipe_states_its_rule_and_the_latency_table_has_every_executable_point(with_int8, tmp_path):
    from squeezelab.widgets.html_report import choose_point

    result = with_int8
    position, rule = choose_point(result, max_drop=0.05)
    # A recommendation is a file to ship: an executable row, whatever simulated row is smaller.
    best = result.best(max_accuracy_drop=0.05, executable_only=True)
    assert result.table.iloc[position]["label"] == best["label"] and result.table.iloc[position]["executable"]
    assert "smallest file" in rule and "top-1 accuracy drop" in rule and "5.00 pp" in rule
    assert "among the executable points (simulated ones are shown, not chosen" in rule
    anything, anything_rule = choose_point(result, max_drop=0.05, executable_only=False)
    assert result.table.iloc[anything]["label"] == result.best(max_accuracy_drop=0.05)["label"]
    assert "simulated ones included (not files to ship)" in anything_rule
    text = report(result, tmp_path / "r.html", current=position, rule=rule).read_text()
    assert f"Chosen as {html.escape(rule)}." in text
    # What compressing the chosen row cost, by stage (issue #24): its details' stages, in the recipe section.
    chosen_stages = [row["stage"] for row in result.table.iloc[position]["details"]["stages"]]
    assert "Compressing it took" in text and all(f"<td>{stage}</td>" in text for stage in chosen_stages)
    # The static int8 row's calibration is stated: on the calibration inputs, not on the evaluated samples.
    evaluated = int(result.table.iloc[0]["n_samples"])
    assert (f"Static int8 calibrated on the 128 calibration_data inputs, kept apart from the {evaluated} samples "
            "evaluated.") in text
    noted = result.table.copy()
    noted.attrs["left_out"] = {"int8-dynamic": "int8-dynamic does not apply: <convolutions> stay float"}
    assert "Left out of the default grid: int8-dynamic does not apply: &lt;convolutions&gt; stay float." in report(
        noted, tmp_path / "noted.html").read_text()
    by_latency = text.split("vs latency</h3>")[1].split("</table>")[0]
    executable = result.table[result.table["executable"].astype(bool)]
    assert by_latency.count("<tr") - 1 == len(executable) == 3  # every executable point, not only the frontier
    assert "on the frontier" in by_latency
    unchosen = report(result, tmp_path / "by-hand.html", current=position).read_text()
    assert "chosen by hand" in unchosen
    with pytest.raises(ConfigError, match="max_accuracy_drop|drop"):
        choose_point(result, max_drop=-1.0)


def test_the_links_follow_the_sections_in_the_page_without_a_grid(with_int8, small, tmp_path):
    """A sweep of recipes at one sparsity has no grid figure: the links still follow the page's order."""
    result = with_int8
    table = result.table[result.table["sparsity"] == 0.0].reset_index(drop=True)
    text = report(table, tmp_path / "r.html", sensitivity=small[1]).read_text()
    nav = re.findall(r'<a href="#([\w-]+)">', text.split("<nav>")[1].split("</nav>")[0])
    sections = re.findall(r'<section id="([\w-]+)">', text)
    assert nav == sections and "explore" not in nav and nav.index("sensitivity-bits") > nav.index("recipe")


def test_the_chosen_rows_default_fidelity_steps_are_stated(tmp_path):
    inputs = tiny_bert_inputs(batch=24, seq=8, seed=4)
    calibration, data = {k: v[:8] for k, v in inputs.items()}, ({k: v[8:] for k, v in inputs.items()}, None)
    sweep = sl.sweep(tiny_bert(seed=0), data, bits=[8], sparsity=[0.0], runtime="int8-static", calibration_data=calibration,
                     output="last_hidden_state", cache=False, progress=False, rounds=0)
    row = sweep.table.index[sweep.table["label"].str.contains("int8-static")][0]
    assert sweep.table["details"].iloc[row]["transforms"]["applied"] == ["smooth-auto"]
    text = report(sweep, tmp_path / "r.html", current=int(row)).read_text(encoding="utf-8")
    assert "Fidelity steps applied before quantizing: <b>smooth-auto</b>" in text and "transformer" in text
