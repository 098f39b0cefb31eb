"""``report(sweep, path)``: one self-contained HTML file that opens offline, with no kernel.

What is in it: the trade-off figure (the sweep's metric against size and
latency, the Pareto frontier, the chosen point, each latency's spread over its
timed rounds), a figure to explore the swept grid with Plotly's own sliders (bit
width and sparsity; only when the sweep has a grid: two sparsities or more), the
Pareto rows by size, every executable point by latency with the frontier marked,
the chosen recipe as TOML with the rule that chose it (``choose_point``),
per-layer sensitivity heatmaps when given, the full table (simulated rows
marked), the environment and a timestamp. The tables are built in
``_report_tables``, the grid figure in ``grid_figure``.

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
import os
import tempfile
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from squeezelab.engine.core.errors import ArtifactPathError, ConfigError
from squeezelab.engine.core.paths import as_path, file_to_write, write_failed
from squeezelab.widgets._labels import MetricLabels
from squeezelab.widgets._report_tables import html_table, latency_table
from squeezelab.widgets.grid_figure import explore_figure, has_grid

if TYPE_CHECKING:
    import pandas as pd

    from squeezelab.engine.explore.pareto import SweepTable
    from squeezelab.engine.core.recipe import Recipe

__all__ = ["report", "choose_point", "explore_figure", "PLOTLY_CONFIG"]

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
.spread{display:block;color:#777;font-size:11px}.scroll{overflow-x:auto}.rule{background:#eef6ee;border-left:3px solid #2ca02c;padding:6px 10px}
"""


def _slim_template(fig: Any) -> None:
    """Keep only the layout part of the white template: the full one adds ~7 KB to every figure."""
    import plotly.graph_objects as go
    import plotly.io as pio

    layout = pio.templates["plotly_white"].layout.to_plotly_json()
    for unused in ("polar", "ternary", "scene", "geo"):
        layout.pop(unused, None)
    fig.layout.template = go.layout.Template(layout=layout)


# --------------------------------------------------------------------------- the page


def _figure_html(fig: Any, div_id: str) -> str:
    _slim_template(fig)
    return fig.to_html(
        full_html=False, include_plotlyjs=False, include_mathjax=False, config=PLOTLY_CONFIG,
        div_id=div_id, default_width="100%",
    )


def _environment_html() -> str:
    from squeezelab.engine.runtime.environment import environment

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
    from squeezelab.engine.explore.evaluation import recipe_of

    return recipe_of(table.iloc[position])


def _exists(path: Path) -> ConfigError:
    return ConfigError(
        f"report path {str(path)!r} already exists; pass overwrite=True to replace it, or choose another path."
    )


def _check_path(path: Path, overwrite: bool, *, what: str = "report path", overwrite_fix: str | None = None) -> None:
    """Refuse, before the work, a path that is a folder, lies under a file, has no folder or a read-only one,
    or exists without ``overwrite`` (``ArtifactPathError``, a ``ConfigError``); the CLI passes its own words."""
    fix = overwrite_fix or "pass overwrite=True to replace it, or choose another path"
    file_to_write(path, what=what, overwrite=overwrite, overwrite_fix=fix, example="report.html")


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


def choose_point(
    sweep: SweepTable | pd.DataFrame, *, max_drop: float, objective: str = "size", executable_only: bool = True
) -> tuple[int, str]:
    """The row a rule chooses, and the rule in words (what the report's "Chosen recipe" states).

    The rule is ``SweepTable.best``'s: the smallest file (``objective="size"``) or the lowest
    median latency (``"latency"``) among rows whose measured drop of the metric is at most
    ``max_drop`` (in the metric's units: 0.01 is one point of top-1 accuracy). A recommendation is
    a file one can ship, so only executable rows are chosen by default; ``executable_only=False``
    lets a simulated row win too (its size a packed file, its latency PyTorch's: not a deployable
    model), and the rule then says so.

    Returns:
        ``(row position, rule)``, e.g. ``(7, "the smallest file whose top-1 accuracy drop is at most
        1.00 pp ...")``.

    Raises:
        ConfigError: no row meets the rule, or an argument is out of range.
    """
    from squeezelab.engine.explore.pareto import SweepTable

    table = getattr(sweep, "table", sweep).reset_index(drop=True)
    row = SweepTable(table).best(max_accuracy_drop=max_drop, objective=objective, executable_only=executable_only)
    labels = MetricLabels.of(table)
    what = {"size": "the smallest file", "latency": "the lowest median latency"}[objective]
    among = (
        "among the executable points (simulated ones are shown, not chosen: they are not files to ship)"
        if executable_only else "among all points measured, simulated ones included (not files to ship)"
    )
    rule = (
        f"{what} whose {labels.name} drop (baseline minus candidate, as measured) is at most "
        f"{labels.drop(max_drop)}, {among}"
    )
    return int(row.name), rule


def _resolve_choice(table: pd.DataFrame, recipe: Recipe | None, current: int | None) -> tuple[Recipe | None, int | None]:
    """Check ``recipe`` / ``current`` and fill in one from the other."""
    from squeezelab.engine.core.recipe import Recipe

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
                    return recipe, i
            except (ConfigError, TypeError, ValueError):
                continue
    return recipe, current


def _figures(table: pd.DataFrame, labels: MetricLabels, current: int | None, sensitivity: Any) -> list[tuple[str, str, str, Any]]:
    """``(section id, heading, intro, figure)`` of every figure in the page."""
    from squeezelab.widgets.heatmap import sensitivity_heatmap
    from squeezelab.widgets.tradeoff import tradeoff_figure, update_tradeoff

    name = html.escape(labels.name)
    trade = tradeoff_figure(widget=False)
    update_tradeoff(trade, table, current=current)
    figures: list[tuple[str, str, str, Any]] = [(
        "tradeoff", "Trade-off",
        f"{name} against stored size and latency. Filled circles run as real ONNX Runtime kernels; "
        "open diamonds are <b>simulated</b> (PyTorch, not real kernels: their size is the packed file, their "
        "latency is not a deployable number). Bars on the latency panel span the middle half of each point's "
        "timed rounds. The green step line is the Pareto frontier (on the latency panel, of the executable "
        "points); the red ring is the chosen point.",
        trade,
    )]
    if has_grid(table):
        figures.append((
            "explore", "Explore the grid",
            "Move the <b>bits</b> slider to highlight one bit width, the <b>sparsity</b> slider to move the "
            "selected point along it. Hover for numbers. Runs in the page: no kernel needed.",
            explore_figure(table, current=current),
        ))
    if sensitivity is not None:
        present = set(sensitivity["axis"]) if "axis" in getattr(sensitivity, "columns", ()) else {"bits"}
        sens = MetricLabels.of(sensitivity)
        for axis in [a for a in ("bits", "sparsity", "int8") if a in present]:  # a malformed table fails in the heatmap
            what = (f"the gain in {html.escape(sens.name)} when only that layer is kept float and the rest runs in "
                    "ONNX Runtime's int8 kernels (the part of int8's drop it accounts for)" if axis == "int8" else
                    f"the drop of {html.escape(sens.name)}{' in percentage points' if sens.percent else ''} "
                    f"(baseline minus this) when only that layer is compressed to that "
                    f"{'width' if axis == 'bits' else 'sparsity'}; every other layer stays float32")
            if sensitivity.attrs.get("estimate"):
                what += f" Cells not measured are estimates ({html.escape(sensitivity.attrs['estimate'])})."
            figures.append((f"sensitivity-{axis}", f"Per-layer sensitivity: {axis}", f"Each cell: {what}.",
                            sensitivity_heatmap(sensitivity, axis)))
    return figures


def _head(title: str, n_figures: int) -> list[str]:
    import plotly.offline

    from squeezelab import __version__

    esc_title = html.escape(str(title))
    stamp = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    return [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta name="generator" content="squeezelab {html.escape(__version__)}">',
        f'<meta name="squeezelab-figures" content="{n_figures}">',
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


def _pareto_section(table: pd.DataFrame, labels: MetricLabels, current: int | None) -> str:
    from squeezelab.engine.explore.pareto import pareto_front

    name = html.escape(labels.name)
    front = pareto_front(table, "size_bytes", "value")
    return (
        '<section id="pareto"><h2>Pareto frontier</h2>'
        f"<h3>{name} vs size</h3><p>The points no other point beats on both size and {name}, smallest first.</p>"
        + html_table(front, labels, current_row=current, positions=list(front.index))
        + f"<h3>{name} vs latency</h3><p>Every executable point, fastest first, marked where it is on the frontier "
        "(no other executable point is both faster and better). Simulated points are left out: their latency is "
        "PyTorch computing with decoded weights, not a deployable kernel.</p>"
        + latency_table(table, labels, current_row=current)
        + "</section>"
    )


def _steps_html(table: pd.DataFrame, current: int | None) -> str:
    """What compress applied to the chosen row before quantizing (its fidelity steps), and why; or nothing."""
    if current is None or "details" not in table:
        return ""
    details = table["details"].iloc[current]
    steps = details.get("transforms") if isinstance(details, dict) else None
    if not steps:
        return _stages_html(details)
    return (f'<p class="meta">Fidelity steps applied before quantizing: <b>{html.escape(", ".join(steps["applied"]))}</b> '
            f'({html.escape(steps.get("why", ""))}).</p>') + _stages_html(details)


def _stages_html(details: Any) -> str:
    """What compressing the chosen row cost, stage by stage (``details["stages"]``: wall time, peak resident memory)."""
    stages = details.get("stages") if isinstance(details, dict) else None
    if not stages:
        return ""
    total = sum(row["wall_s"] for row in stages if "." not in row["stage"])  # nested stages are inside their parent
    rows = "".join(f"<tr><td>{html.escape(str(row['stage']))}</td><td>{row['wall_s']:.2f} s</td>"
                   f"<td>{row['peak_rss_bytes'] / 1e9:.2f} GB</td></tr>" for row in stages)
    return (f'<details class="meta"><summary>Compressing it took {total:.1f} s, peak resident memory '
            f'{details.get("peak_rss_bytes", 0) / 1e9:.2f} GB: by stage</summary><table><tr><th>stage</th><th>wall</th>'
            f"<th>peak resident</th></tr>{rows}</table></details>")


def _recipe_section(recipe: Recipe | None, current: int | None, rule: str | None, steps: str = "") -> str:
    parts = ['<section id="recipe"><h2>Chosen recipe</h2>']
    if recipe is None:
        parts.append("<p>No recipe chosen (pass <code>recipe=</code> or <code>current=</code>, and <code>rule=</code> to say why).</p>")
    else:
        where = f" (row {current})" if current is not None else " (not a row of this sweep)"
        toml_text = recipe.to_toml().strip() or "# fp32 baseline: no compression steps"
        kind = "executable" if recipe.executable else "simulated"
        why = html.escape(rule) if rule else "chosen by hand (the point given to the report), not by a rule"
        parts.append(
            f'<p><b>{html.escape(recipe.label)}</b>{where} <span class="badge {kind}">{kind}</span></p>'
            f'<p class="rule">Chosen as {why}.</p>{steps}'
            f"<pre><code>{html.escape(toml_text)}</code></pre>"
            "<p class=\"meta\">Load it with <code>Recipe.from_toml(text)</code>.</p>"
        )
    parts.append("</section>")
    return "".join(parts)


def _table_section(table: pd.DataFrame, labels: MetricLabels, current: int | None) -> str:
    n_simulated = int(((table["kind"] == "simulated") & ~table["is_baseline"].astype(bool)).sum())
    # What the sweep states about its points: where static int8 was calibrated, what the defaults left out.
    notes = [table.attrs["calibration"].capitalize() + "."] if table.attrs.get("calibration") else []
    notes += [f"Left out of the default grid: {why}." for why in table.attrs.get("left_out", {}).values()]
    return (
        '<section id="table"><h2>All results</h2>'
        f"<p>{len(table)} rows, the fp32 baseline first; {n_simulated} simulated "
        '(<span class="badge simulated">simulated</span>: measured in PyTorch, not as real low-bit kernels).</p>'
        + "".join(f'<p class="meta">{html.escape(note)}</p>' for note in notes)
        + html_table(table, labels, current_row=current)
        + "</section>"
    )


def report(
    sweep: SweepTable | pd.DataFrame,
    path: str | os.PathLike[str],
    *,
    title: str = "squeezelab report",
    recipe: Recipe | None = None,
    current: int | None = None,
    rule: str | None = None,
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
        rule: why that point was chosen, stated under "Chosen recipe" (``choose_point`` gives
            a row and its rule); None says it was chosen by hand.
        sensitivity: per-layer sensitivity table (``layer_sensitivity``); one heatmap per axis in it.
        overwrite: replace an existing file. False raises ``ConfigError`` if ``path`` exists.

    Returns:
        The absolute path written. The file is about 4.8 MB of inlined plotly.js
        plus tens of kilobytes of figures and tables; it fetches nothing.

    Raises:
        ArtifactPathError: ``path`` exists (and ``overwrite=False``), is a folder, has no parent
            folder, lies under a file or cannot be written (a ``ConfigError`` and an ``OSError``).
        ConfigError: ``current`` is out of range; ``recipe`` is not a ``Recipe``.
    """
    path = as_path(path).absolute()
    _check_path(path, overwrite)  # fail before the work, and again when moving the file into place
    source = getattr(sweep, "table", sweep)
    if not hasattr(source, "columns") or "value" not in source.columns:
        raise ConfigError(f"sweep={type(sweep).__name__}; pass the Sweep that sweep() returns (or its .table).")
    table = source.copy(deep=True).reset_index(drop=True)  # the caller's table stays as it is
    labels = MetricLabels.of(source)
    recipe, current = _resolve_choice(table, recipe, current)
    figures = _figures(table, labels, current, sensitivity)

    def figure_section(section: str, heading: str, intro: str, fig: Any) -> str:
        return (
            f'<section id="{section}"><h2>{html.escape(heading)}</h2><p>{intro}</p>'
            f"{_figure_html(fig, f'squeezelab-{section}')}</section>"
        )

    parts = _head(title, len(figures))
    if getattr(sweep, "complete", True) is False:
        parts.append('<p class="warn">This sweep was interrupted: the table holds only the finished points.</p>')
    main_figures = [f for f in figures if not f[0].startswith("sensitivity")]
    links = [(s, h) for s, h, *_ in main_figures] + [("pareto", "Pareto frontier"), ("recipe", "Chosen recipe")]
    links += [(s, h) for s, h, *_ in figures if s.startswith("sensitivity")]  # in the order of the page
    links += [("table", "All results"), ("environment", "Environment")]
    parts.append("<nav>" + "".join(f'<a href="#{s}">{html.escape(h)}</a>' for s, h in links) + "</nav></header>")
    parts += [figure_section(*entry) for entry in main_figures]
    parts.append(_pareto_section(table, labels, current))
    parts.append(_recipe_section(recipe, current, rule, _steps_html(table, current)))
    parts += [figure_section(*entry) for entry in figures if entry not in main_figures]
    parts.append(_table_section(table, labels, current))
    parts.append(f'<section id="environment"><h2>Environment</h2>{_environment_html()}</section>')
    parts.append("</body></html>")
    try:
        _write_atomically(path, "\n".join(parts) + "\n", overwrite)
    except ArtifactPathError:
        raise
    except OSError as exc:  # a full disk, or the folder changed since the check
        raise write_failed(path, exc, "report path") from exc
    return path
