"""``report(sweep, path)``: one self-contained HTML file that opens offline, with no kernel.

What is in it: the trade-off figure (the sweep's metric against size and
latency, the Pareto frontier, the chosen point), a figure to explore the swept grid with
Plotly's own sliders (bit width and sparsity), the Pareto rows, the chosen
recipe as TOML, per-layer sensitivity heatmaps when given, the full table
(simulated rows marked), the environment and a timestamp.

How it stays self-contained: plotly.js is inlined once in the head, each
figure is ``fig.to_html(full_html=False, include_plotlyjs=False,
include_mathjax=False)``, nothing names a URL, and a Content-Security-Policy
(``default-src 'none'``) stops the page from fetching anything even if some
script tried. Everything interactive is plotly.js: ``layout.sliders`` steps
that ``restyle`` precomputed traces.

Every figure is named after the sweep's metric (``table.attrs``): a cosine to
the fp32 model is "cosine to fp32 0.9912", its drop 0.0088; % and pp appear
only for percent metrics such as top-1 accuracy.

Every string that comes from the model or the user (title, labels, layer
names, recipe text) is HTML-escaped, in the page and inside the figures' JSON:
plotly.js renders titles and hover text as HTML.
"""

from __future__ import annotations

import datetime as _dt
import html
import math
import os
import tempfile
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from squeezelab.engine.errors import ConfigError
from squeezelab.widgets._labels import MetricLabels

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

    from squeezelab.engine.pareto import SweepTable
    from squeezelab.engine.recipe import Recipe

__all__ = ["report", "explore_figure", "PLOTLY_CONFIG"]

# The modebar without the Plotly logo link or cloud buttons: nothing in the page points outside it.
PLOTLY_CONFIG = {
    "displaylogo": False,
    "showSendToCloud": False,
    "responsive": True,
}
# No network of any kind: scripts and styles are inline; plotly.js draws heatmaps as data: images.
_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src data: blob:; font-src data:; base-uri 'none'; form-action 'none'"
)
_TABLE_COLUMNS = (
    ("label", "recipe"),
    ("kind", "kind"),
    ("bits", "bits"),
    ("sparsity", "sparsity asked"),
    ("weight_sparsity", "zeros"),
    ("value", "{metric}"),  # headers in braces are filled in with the metric's labels
    ("drop", "{drop}"),
    ("size_bytes", "size (B)"),
    ("compression", "compression"),
    ("latency_ms", "latency (ms)"),
    ("speedup", "speedup"),
)
_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1200px;padding:0 16px 48px;color:#222}
h1{margin:24px 0 4px}h2{margin-top:36px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#666;font-size:13px}nav a{margin-right:12px;font-size:14px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}th,td{padding:3px 8px;border-bottom:1px solid #eee;text-align:right}
th{background:#f6f6f6}td.text,th.text{text-align:left}
td{white-space:nowrap}td.text{white-space:normal}
tr.simulated td{background:#fff8ef}tr.current td{font-weight:600;background:#fde2e2;border-bottom:2px solid #d62728}
.badge{display:inline-block;white-space:nowrap;padding:0 6px;border-radius:8px;font-size:11px;font-weight:600}
.badge.simulated{background:#ff7f0e;color:#fff}.badge.executable{background:#1f77b4;color:#fff}.badge.baseline{background:#7f7f7f;color:#fff}
pre{background:#f6f6f6;padding:8px 12px;overflow-x:auto}.warn{color:#b35900}
"""


# --------------------------------------------------------------------------- small formatting helpers


def _num(value: Any, spec: str, suffix: str = "") -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if math.isnan(v) else format(v, spec) + suffix


def _cell(column: str, value: Any, labels: MetricLabels) -> str:
    if column == "value":
        return html.escape(labels.value(value))
    if column == "drop":
        return html.escape(labels.drop(value))
    if column == "weight_sparsity":
        return _num(value, ".2%")
    if column == "sparsity":
        return _num(value, ".0%")
    if column == "size_bytes":
        return _num(value, ",.0f")
    if column in ("compression", "speedup"):
        return _num(value, ".2f", "×")
    if column == "latency_ms":
        return _num(value, ".3f")
    if column == "bits":
        return _num(value, ".0f")
    return html.escape(str(value))


def _speedup_cell(row: Any) -> str:
    """The median speedup, its 95% interval and what it says ("about the same" when it includes 1.0)."""
    from squeezelab.engine.stats import speedup_text

    def number(column: str) -> float | None:
        try:
            return float(row.get(column))
        except (TypeError, ValueError):
            return None

    return html.escape(speedup_text(number("speedup"), number("speedup_low"), number("speedup_high"), "×"))


def _badge(row: Any) -> str:
    kind = "baseline" if bool(row.get("is_baseline", False)) else str(row.get("kind", ""))
    css = kind if kind in ("simulated", "executable", "baseline") else ""
    text = "fp32 baseline" if kind == "baseline" else kind
    return f'<span class="badge {css}">{html.escape(text)}</span>'


def _html_table(
    rows: Any, labels: MetricLabels, *, current_row: int | None = None, positions: Sequence[int] | None = None
) -> str:
    """An escaped HTML table of sweep rows; simulated rows carry the ``simulated`` class and badge."""
    names = {"metric": html.escape(labels.name), "drop": html.escape(labels.drop_title)}
    columns = [(c, h.format(**names)) for c, h in _TABLE_COLUMNS if c in rows.columns]
    head = '<th class="text">#</th>' + "".join(
        f'<th class="text">{h}</th>' if c in ("label", "kind") else f"<th>{h}</th>" for c, h in columns
    )
    body = []
    positions = list(positions) if positions is not None else list(range(len(rows)))
    for pos, (_, row) in zip(positions, rows.iterrows()):
        classes = []
        if str(row.get("kind")) == "simulated" and not bool(row.get("is_baseline", False)):
            classes.append("simulated")
        if current_row is not None and pos == current_row:
            classes.append("current")
        cells = [f'<td class="text">{pos}</td>']
        for column, _ in columns:
            if column == "kind":
                cells.append(f'<td class="text">{_badge(row)}</td>')
            elif column == "label":
                cells.append(f'<td class="text">{_cell(column, row[column], labels)}</td>')
            elif column == "speedup" and not bool(row.get("is_baseline", False)):
                cells.append(f"<td>{_speedup_cell(row)}</td>")
            else:
                cells.append(f"<td>{_cell(column, row[column], labels)}</td>")
        css = f' class="{" ".join(classes)}"' if classes else ""
        body.append(f"<tr{css}>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _hover(row: Any, labels: MetricLabels) -> str:
    return (
        f"<b>{html.escape(str(row['label']))}</b><br>"
        f"{html.escape(labels.figure(row['value'], row.get('drop')))}<br>"
        f"size {_cell('size_bytes', row['size_bytes'], labels)} B ({_cell('compression', row['compression'], labels)})<br>"
        f"{html.escape(str(row['kind']))}"
    )


def _slim_template(fig: Any) -> None:
    """Keep only the layout part of the white template: the full one adds ~7 KB to every figure."""
    import plotly.graph_objects as go
    import plotly.io as pio

    layout = pio.templates["plotly_white"].layout.to_plotly_json()
    for unused in ("polar", "ternary", "scene", "geo"):
        layout.pop(unused, None)
    fig.layout.template = go.layout.Template(layout=layout)


# --------------------------------------------------------------------------- the grid explorer


def explore_figure(table: pd.DataFrame, *, current: int | None = None) -> go.Figure:
    """The metric against sparsity (one line per bit width) and against size, with two sliders.

    The ``bits`` slider shows the highlighted line and point of one bit width
    (it toggles ``visible`` of the per-width ``selected_line`` and
    ``selected_point`` traces); the ``sparsity`` slider moves every
    per-width ``selected_point`` to that sparsity (it restyles their ``x``,
    ``y`` and ``text``). Neither needs the other's state, so the page needs
    no script of its own. Traces carry ``meta = {"role", "panel", "bits"}``.

    Args:
        table: a sweep table (DataFrame, baseline first).
        current: row position to select first (a grid row), or None.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    labels = MetricLabels.of(table)
    rows = table.reset_index(drop=True)
    grid = rows[~rows["is_baseline"].astype(bool) & rows["value"].notna()]
    bits_values = sorted({int(b) for b in grid["bits"]}, reverse=True)
    sparsity_values = sorted({float(s) for s in grid["sparsity"]})
    cell: dict[tuple[int, float], Any] = {}
    for _, row in grid.iterrows():  # grid points come first in a sweep table: they win over extra recipes
        cell.setdefault((int(row["bits"]), float(row["sparsity"])), row)

    b0 = bits_values[0] if bits_values else None
    s0 = sparsity_values[0] if sparsity_values else None
    if current is not None and current in grid.index:
        b0, s0 = int(rows.at[current, "bits"]), float(rows.at[current, "sparsity"])

    fig = make_subplots(
        rows=1, cols=2, horizontal_spacing=0.1,
        subplot_titles=[f"{html.escape(labels.name)} vs sparsity, per bit width", f"{html.escape(labels.name)} vs size"],
    )
    palette = ["#9ecae1", "#a1d99b", "#fdae6b", "#bcbddc", "#fc9272", "#c7e9c0", "#d9d9d9", "#fdd0a2"]
    for i, b in enumerate(bits_values):
        points = [cell[(b, s)] for s in sparsity_values if (b, s) in cell]
        fig.add_trace(
            go.Scatter(
                x=[float(r["sparsity"]) for r in points], y=[float(r["value"]) for r in points],
                text=[_hover(r, labels) for r in points], hovertemplate="%{text}<extra></extra>",
                mode="lines+markers", name=f"{b} bits", legendgroup=f"{b}",
                line=dict(color=palette[i % len(palette)], width=2), marker=dict(size=6),
                meta={"role": "grid", "panel": "sparsity", "bits": b},
            ),
            row=1, col=1,
        )
    fig.add_trace(
        go.Scatter(
            x=grid["size_bytes"].astype(float).tolist(), y=grid["value"].astype(float).tolist(),
            text=[_hover(r, labels) for _, r in grid.iterrows()], hovertemplate="%{text}<extra></extra>",
            mode="markers", name="all points", marker=dict(color="#bdbdbd", size=7),
            meta={"role": "all", "panel": "size"},
        ),
        row=1, col=2,
    )
    base = rows[rows["is_baseline"].astype(bool)]
    if len(base):
        b = base.iloc[0]
        span = [min(sparsity_values, default=0.0), max(sparsity_values, default=0.0)]
        fig.add_trace(
            go.Scatter(
                x=span, y=[float(b["value"])] * 2, mode="lines", name="fp32 baseline",
                line=dict(color="#7f7f7f", dash="dash"), hovertemplate=f"{_hover(b, labels)}<extra></extra>",
                meta={"role": "baseline", "panel": "sparsity"},
            ),
            row=1, col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=[float(b["size_bytes"])], y=[float(b["value"])], text=[_hover(b, labels)],
                hovertemplate="%{text}<extra></extra>", mode="markers", showlegend=False, name="fp32 baseline",
                marker=dict(symbol="star", size=14, color="#7f7f7f"), meta={"role": "baseline", "panel": "size"},
            ),
            row=1, col=2,
        )

    def point(b: int, s: float | None, column: str) -> tuple[list[float], list[float], list[str]]:
        r = cell.get((b, s)) if s is not None else None
        if r is None:
            return [], [], []
        return [float(r[column])], [float(r["value"])], [_hover(r, labels)]

    selected: list[int] = []  # indices of every selected_* trace, in the order the bits steps list them
    points: list[tuple[int, int, str]] = []  # (trace index, bits, column) of the selected_point traces
    for b in bits_values:
        line = fig.data[bits_values.index(b)]
        fig.add_trace(
            go.Scatter(
                x=line.x, y=line.y, text=line.text, hovertemplate="%{text}<extra></extra>", mode="lines+markers",
                name="selected bits", showlegend=False, visible=b == b0,
                line=dict(color="#d62728", width=4), marker=dict(size=8, color="#d62728"),
                meta={"role": "selected_line", "panel": "sparsity", "bits": b},
            ),
            row=1, col=1,
        )
        selected.append(len(fig.data) - 1)
        for col, (panel, column) in enumerate((("sparsity", "sparsity"), ("size", "size_bytes")), start=1):
            x, y, text = point(b, s0, column)
            fig.add_trace(
                go.Scatter(
                    x=x, y=y, text=text, hovertemplate="%{text}<extra></extra>", mode="markers",
                    name="selected point", showlegend=False, visible=b == b0,
                    marker=dict(symbol="circle-open", size=20, color="#d62728", line=dict(width=3)),
                    meta={"role": "selected_point", "panel": panel, "bits": b},
                ),
                row=1, col=col,
            )
            selected.append(len(fig.data) - 1)
            points.append((len(fig.data) - 1, b, column))

    bits_steps = []
    for b in bits_values:
        visible = [fig.data[i].meta["bits"] == b for i in selected]
        bits_steps.append(dict(method="restyle", label=f"{b}", value=f"{b}", args=[{"visible": visible}, selected]))
    sparsity_steps = []
    for s in sparsity_values:
        xs, ys, texts = zip(*(point(b, s, column) for _, b, column in points)) if points else ((), (), ())
        sparsity_steps.append(
            dict(
                method="restyle", label=f"{s:.0%}", value=f"{s}",
                args=[{"x": list(xs), "y": list(ys), "text": list(texts)}, [i for i, _, _ in points]],
            )
        )
    sliders = []
    if bits_steps:
        sliders.append(
            dict(
                name="bits", active=bits_values.index(b0), steps=bits_steps, x=0.0, len=0.44, y=-0.18,
                yanchor="top", pad=dict(t=10), currentvalue=dict(prefix="bits: ", font=dict(size=13)),
            )
        )
    if sparsity_steps:
        sliders.append(
            dict(
                name="sparsity", active=sparsity_values.index(s0), steps=sparsity_steps, x=0.56, len=0.44, y=-0.18,
                yanchor="top", pad=dict(t=10), currentvalue=dict(prefix="sparsity: ", font=dict(size=13)),
            )
        )
    fig.update_xaxes(title_text="sparsity asked", tickformat=".0%", row=1, col=1)
    fig.update_xaxes(title_text="size (bytes, log scale)", type="log", row=1, col=2)
    fig.update_yaxes(title_text=html.escape(labels.name), tickformat=labels.tickformat)
    fig.update_layout(
        sliders=sliders, height=560, template="plotly_white", margin=dict(l=60, r=20, t=60, b=40),
        legend=dict(orientation="h", yanchor="bottom", y=1.08, x=0),
    )
    return fig


# --------------------------------------------------------------------------- the page


def _figure_html(fig: Any, div_id: str) -> str:
    _slim_template(fig)
    return fig.to_html(
        full_html=False, include_plotlyjs=False, include_mathjax=False, config=PLOTLY_CONFIG,
        div_id=div_id, default_width="100%",
    )


def _environment_html() -> str:
    from squeezelab.engine.environment import environment

    env = dict(environment())
    for package in ("pandas", "plotly"):
        try:
            env.setdefault(package, metadata.version(package))
        except metadata.PackageNotFoundError:
            env.setdefault(package, None)
    rows = "".join(
        f'<tr><th class="text">{html.escape(str(k))}</th><td class="text">{html.escape(str(v))}</td></tr>'
        for k, v in env.items()
    )
    return f"<table>{rows}</table>"


def _recipe_of(table: pd.DataFrame, position: int) -> Recipe:
    from squeezelab.engine.evaluation import recipe_of

    return recipe_of(table.iloc[position])


def _exists(path: Path) -> ConfigError:
    return ConfigError(
        f"report path {str(path)!r} already exists; pass overwrite=True to replace it, or choose another path."
    )


def _check_path(path: Path, overwrite: bool) -> None:
    if path.is_dir():
        raise ConfigError(f"report path {str(path)!r} is a folder; give a file name such as {str(path / 'report.html')!r}.")
    if not path.parent.is_dir():
        raise ConfigError(f"the folder of report path {str(path)!r} does not exist; create {str(path.parent)!r} first.")
    if path.exists() and not overwrite:
        raise _exists(path)


def _write_atomically(path: Path, text: str, overwrite: bool) -> None:
    """Write to a temporary file beside ``path``, then move it into place in one step."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a report is meant to be shared
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if the path appeared meanwhile: never clobber without overwrite=True
            except FileExistsError:
                raise _exists(path) from None
            except OSError:  # a file system without hard links: check, then move
                if path.exists():
                    raise _exists(path) from None
                os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def report(
    sweep: SweepTable | pd.DataFrame,
    path: str | os.PathLike[str],
    *,
    title: str = "squeezelab report",
    recipe: Recipe | None = None,
    current: int | None = None,
    sensitivity: pd.DataFrame | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a self-contained HTML report of a sweep to ``path`` and return its absolute path.

    Args:
        sweep: a ``Sweep`` (or ``SweepTable``, or its ``.table`` DataFrame); never changed.
        path: the ``.html`` file to write.
        title: the page title (escaped).
        recipe: the chosen ``Recipe``; None takes the recipe of row ``current``, if given.
        current: row position (in ``sweep.table``) of the chosen point, ringed in the
            trade-off figure and selected first by the sliders. None with a ``recipe``
            finds that recipe's row, if the sweep measured it.
        sensitivity: per-layer sensitivity table (``layer_sensitivity``); one heatmap per axis in it.
        overwrite: replace an existing file. False raises ``ConfigError`` if ``path`` exists.

    Returns:
        The absolute path written. The file is about 4.8 MB of inlined plotly.js
        plus tens of kilobytes of figures and tables; it fetches nothing.

    Raises:
        ConfigError: ``path`` exists (and ``overwrite=False``), is a folder or has no
            parent folder; ``current`` is out of range; ``recipe`` is not a ``Recipe``.
    """
    import plotly.offline

    from squeezelab import __version__
    from squeezelab.engine.pareto import pareto_front
    from squeezelab.engine.recipe import Recipe
    from squeezelab.widgets.layer_views import sensitivity_heatmap
    from squeezelab.widgets.tradeoff import tradeoff_figure, update_tradeoff

    path = Path(path).absolute()
    _check_path(path, overwrite)  # fail before the work, and again when moving the file into place
    source = getattr(sweep, "table", sweep)
    if not hasattr(source, "columns") or "value" not in source.columns:
        raise ConfigError(f"sweep={type(sweep).__name__}; pass the Sweep that sweep() returns (or its .table).")
    table = source.copy(deep=True).reset_index(drop=True)  # the caller's table stays as it is
    labels = MetricLabels.of(source)
    name = html.escape(labels.name)
    n = len(table)
    if current is not None and (isinstance(current, bool) or not isinstance(current, int) or not 0 <= current < n):
        raise ConfigError(f"current={current!r} must be a row position in 0..{n - 1} of the sweep table.")
    if recipe is not None and not isinstance(recipe, Recipe):
        raise ConfigError(f"recipe={recipe!r} is not a Recipe; pass sweep.recipe(i) or a Recipe(...).")
    if recipe is None and current is not None and "recipe" in table:
        recipe = _recipe_of(table, current)
    if recipe is not None and current is None and "recipe" in table:
        for i in range(n):
            try:
                if _recipe_of(table, i) == recipe:
                    current = i
                    break
            except (ConfigError, TypeError, ValueError):
                continue

    figures: list[tuple[str, str, str, Any]] = []  # (section id, heading, intro, figure)
    trade = tradeoff_figure(widget=False)
    update_tradeoff(trade, table, current=current)
    figures.append((
        "tradeoff", "Trade-off",
        (
            f"{name} against stored size and latency. Filled circles run as real ONNX Runtime kernels; "
            "open diamonds are <b>simulated</b> (PyTorch, not real kernels: their size is the packed file, their "
            "latency is not a deployable number). The green step line is the Pareto frontier; the red ring is "
            "the chosen point."
        ),
        trade,
    ))
    if len(table) > 1:
        figures.append((
            "explore", "Explore the grid",
            (
                "Move the <b>bits</b> slider to highlight one bit width, the <b>sparsity</b> slider to move the "
                "selected point along it. Hover for numbers. Runs in the page: no kernel needed."
            ),
            explore_figure(table, current=current),
        ))
    if sensitivity is not None:
        present = set(sensitivity["axis"]) if "axis" in getattr(sensitivity, "columns", ()) else {"bits"}
        axes = [a for a in ("bits", "sparsity") if a in present]  # a malformed table fails in the heatmap
        sens = MetricLabels.of(sensitivity)
        for axis in axes:
            figures.append((
                f"sensitivity-{axis}", f"Per-layer sensitivity: {axis}",
                (
                    f"Each cell: the drop of {html.escape(sens.name)}{' in percentage points' if sens.percent else ''} (baseline minus "
                    "this) when only that layer is "
                    f"compressed to that {'width' if axis == 'bits' else 'sparsity'}; every other layer stays float32."
                ),
                sensitivity_heatmap(sensitivity, axis),
            ))

    esc_title = html.escape(str(title))
    stamp = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    figure_ids = {section: f"squeezelab-{section}" for section, *_ in figures}
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta name="generator" content="squeezelab {html.escape(__version__)}">',
        f'<meta name="squeezelab-figures" content="{len(figures)}">',
        f"<title>{esc_title}</title>",
        f"<style>{_STYLE}</style>",
        f"<script>{plotly.offline.get_plotlyjs()}</script>",
        "</head><body>",
        f"<header><h1>{esc_title}</h1>",
        (
            f'<p class="meta">Generated <time datetime="{stamp}">{stamp}</time> by squeezelab '
            f"{html.escape(__version__)}. A single file: it opens offline and fetches nothing.</p>"
        ),
    ]
    if getattr(sweep, "complete", True) is False:
        parts.append('<p class="warn">This sweep was interrupted: the table holds only the finished points.</p>')
    links = [(s, h) for s, h, *_ in figures[:2]] + [("pareto", "Pareto frontier"), ("recipe", "Chosen recipe")]
    links += [(s, h) for s, h, *_ in figures[2:]] + [("table", "All results"), ("environment", "Environment")]
    parts.append("<nav>" + "".join(f'<a href="#{s}">{html.escape(h)}</a>' for s, h in links) + "</nav></header>")

    def figure_section(section: str, heading: str, intro: str, fig: Any) -> str:
        return (
            f'<section id="{section}"><h2>{html.escape(heading)}</h2><p>{intro}</p>'
            f"{_figure_html(fig, figure_ids[section])}</section>"
        )

    for entry in figures[:2]:
        parts.append(figure_section(*entry))

    parts.append('<section id="pareto"><h2>Pareto frontier</h2>')
    for column, what in (("size_bytes", "size"), ("latency_ms", "latency")):
        front = pareto_front(table, column, "value")
        parts.append(f"<h3>{name} vs {what}</h3>")
        parts.append(_html_table(front, labels, current_row=current, positions=list(front.index)))
    parts.append("</section>")

    parts.append('<section id="recipe"><h2>Chosen recipe</h2>')
    if recipe is None:
        parts.append("<p>No recipe chosen (pass <code>recipe=</code> or <code>current=</code>).</p>")
    else:
        where = f" (row {current})" if current is not None else " (not a row of this sweep)"
        toml_text = recipe.to_toml().strip() or "# fp32 baseline: no compression steps"
        kind = "executable" if recipe.executable else "simulated"
        parts.append(
            f'<p><b>{html.escape(recipe.label)}</b>{where} <span class="badge {kind}">{kind}</span></p>'
            f"<pre><code>{html.escape(toml_text)}</code></pre>"
            "<p class=\"meta\">Load it with <code>Recipe.from_toml(text)</code>.</p>"
        )
    parts.append("</section>")

    for entry in figures[2:]:
        parts.append(figure_section(*entry))

    n_simulated = int(((table["kind"] == "simulated") & ~table["is_baseline"].astype(bool)).sum())
    parts.append(
        '<section id="table"><h2>All results</h2>'
        f"<p>{n} rows, the fp32 baseline first; {n_simulated} simulated "
        '(<span class="badge simulated">simulated</span>: measured in PyTorch, not as real low-bit kernels).</p>'
        + _html_table(table, labels, current_row=current)
        + "</section>"
    )
    parts.append(f'<section id="environment"><h2>Environment</h2>{_environment_html()}</section>')
    parts.append("</body></html>")
    _write_atomically(path, "\n".join(parts) + "\n", overwrite)
    return path
