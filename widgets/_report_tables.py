"""The report's HTML tables: every measured row, the Pareto rows, and every executable point by latency.

One unit per figure, the same in every table and plot of the report: the metric by its
own name (% and pp only for percent metrics), sizes in bytes, compression as
``baseline bytes / these bytes`` with ``×``, latency in milliseconds per call with the
middle half of its timed rounds beside the median, speedups with their interval and
reading. Every string from the model or the user is HTML-escaped.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from squeezelab.engine.measurement.stats import number_text, row_speedup_text
from squeezelab.widgets._labels import MetricLabels

__all__ = ["html_table", "latency_table", "TABLE_COLUMNS"]

TABLE_COLUMNS = (
    ("label", "recipe"),
    ("kind", "kind"),
    ("bits", "bits"),
    ("sparsity", "sparsity asked"),
    ("weight_sparsity", "zeros"),
    ("value", "{metric}"),  # headers in braces are filled in with the metric's labels
    ("drop", "{drop}"),
    ("size_bytes", "size (bytes)"),
    ("compression", "compression"),
    ("latency_ms", "latency (ms{batch}): median, p25–p75 of the rounds"),
    ("speedup", "speedup (95% interval)"),
)


def _latency_cell(row: Any) -> str:
    median = number_text(row.get("latency_ms"), ".3f")
    low, high = number_text(row.get("latency_p25_ms"), ".3f"), number_text(row.get("latency_p75_ms"), ".3f")
    if median == "n/a" or "n/a" in (low, high):
        return median
    return f'{median} <span class="spread">{low}–{high}</span>'


def _cell(column: str, row: Any, labels: MetricLabels) -> str:
    value = row.get(column)
    formats = {
        "weight_sparsity": (".2%", ""), "sparsity": (".0%", ""), "size_bytes": (",.0f", ""),
        "compression": (".2f", "×"), "bits": (".0f", ""),
    }
    if column == "value":
        return html.escape(labels.value(value))
    if column == "drop":
        return html.escape(labels.drop(value))
    if column == "latency_ms":
        return _latency_cell(row)
    if column == "speedup":
        return _speedup_cell(row)
    if column in formats:
        return number_text(value, *formats[column])
    return html.escape(str(value))


def _speedup_cell(row: Any) -> str:
    """The median speedup, its 95% interval and what it says ("about the same" when it includes 1.0)."""
    return html.escape(row_speedup_text(row, "×"))


def _badge(row: Any) -> str:
    kind = "baseline" if bool(row.get("is_baseline", False)) else str(row.get("kind", ""))
    css = kind if kind in ("simulated", "executable", "baseline") else ""
    text = "fp32 baseline" if kind == "baseline" else kind
    return f'<span class="badge {css}">{html.escape(text)}</span>'


def _batch(rows: Any) -> str:
    if "latency_batch_size" not in rows:
        return ""
    sizes = {int(b) for b in rows["latency_batch_size"] if b == b}
    return f", batch {sizes.pop()}" if len(sizes) == 1 else ""


def html_table(
    rows: Any,
    labels: MetricLabels,
    *,
    current_row: int | None = None,
    positions: Sequence[int] | None = None,
    marks: dict[int, str] | None = None,
) -> str:
    """An escaped HTML table of sweep rows; simulated rows carry the ``simulated`` class and badge.

    ``positions`` are the rows' positions in the whole table (the ``#`` column); ``marks`` adds
    a text cell per position (a last column, e.g. "on the frontier").
    """
    names = {"metric": html.escape(labels.name), "drop": html.escape(labels.drop_title), "batch": _batch(rows)}
    columns = [(c, h.format(**names)) for c, h in TABLE_COLUMNS if c in rows.columns]
    head = '<th class="text">#</th>' + "".join(
        f'<th class="text">{h}</th>' if c in ("label", "kind") else f"<th>{h}</th>" for c, h in columns
    )
    head += '<th class="text">Pareto frontier</th>' if marks is not None else ""
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
            text = _badge(row) if column == "kind" else _cell(column, row, labels)
            cells.append(f'<td class="text">{text}</td>' if column in ("label", "kind") else f"<td>{text}</td>")
        if marks is not None:
            cells.append(f'<td class="text">{html.escape(marks.get(pos, ""))}</td>')
        css = f' class="{" ".join(classes)}"' if classes else ""
        body.append(f"<tr{css}>{''.join(cells)}</tr>")
    # a wide table scrolls inside its own box instead of running off the page
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def latency_table(table: Any, labels: MetricLabels, *, current_row: int | None = None) -> str:
    """Every executable point with a measured latency, fastest first, its place on the frontier marked.

    Simulated points are left out: their latency is PyTorch computing with decoded weights, not
    a kernel a deployment would run. The frontier is over the executable points only.
    """
    from squeezelab.engine.explore.pareto import pareto_front

    pool = table[table["executable"].astype(bool) & table["latency_ms"].notna() & table["value"].notna()]
    front = set(pareto_front(pool, "latency_ms", "value").index)
    ordered = pool.sort_values(["latency_ms", "value"], ascending=[True, False], kind="stable")
    marks = {i: ("on the frontier" if i in front else "dominated") for i in ordered.index}
    return html_table(ordered, labels, current_row=current_row, positions=list(ordered.index), marks=marks)
