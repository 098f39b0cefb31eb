"""The gates as a Markdown summary, for the page a CI run shows (GitHub's ``$GITHUB_STEP_SUMMARY``).

One table row per gate: the metric, baseline -> candidate, the drop with its interval, the change
against the saved run (``--compress-budget-compare``), the size, the speedup and the verdict; below it
why each failed gate failed (the figure's own line, as the test failure prints it), what was not judged
and why, and whether each fp32 baseline came from the cache. Built from the recorded verdict dicts (the
entries of ``--compress-budget-report``), so the plugin and ``squeezelab gate --markdown`` write the same.
Light to import (no torch).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from squeezelab.checks.verdict import Figure

__all__ = ["markdown_summary"]

_CACHE_WORDS = {
    "hit": "read from the cache (export and outputs skipped)",
    "stored": "exported and measured, then cached",
    "off": "exported and measured (cache off)",
}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _num(x: Any, percent: bool = False, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if percent:
        return f"{x * 100:.2f} %"
    return f"{x:.{digits}f}" if x == 0 or abs(x) >= 0.001 else f"{x:.3g}"


def _drop(result: dict[str, Any]) -> str:
    s, percent = result.get("summary") or {}, bool(result.get("percent"))
    if s.get("drop") is None:
        return "n/a"
    scale, unit = (100, " pp") if percent else (1, "")
    shown = _num(s["drop"] * scale, digits=2 if percent else 4) + unit
    if s.get("drop_low") is not None and s.get("drop_high") is not None:
        low, high = _num(s["drop_low"] * scale, digits=2 if percent else 4), _num(s["drop_high"] * scale, digits=2 if percent else 4)
        shown += f" [{low}, {high}]"
    return shown


def _figure(fig: dict[str, Any]) -> Figure:
    names = {f.name for f in dataclasses.fields(Figure)}
    return Figure(**{k: v for k, v in fig.items() if k in names})


def _versus_saved(result: dict[str, Any], compared: bool) -> str:
    parts = []
    for fig in result["figures"]:
        if fig["name"].endswith("_regression"):
            paired = "paired" if fig.get("low") is not None else "unpaired"
            parts.append(f"{fig['name']} {_num(fig['value'])} ({paired}, max {_num(fig['limit'])})")
        elif fig["name"] == "size_growth":
            parts.append(f"size {fig['value'] * 100:+.1f} % (max {fig['limit'] * 100:+.1f} %)")
        elif fig["name"] == "speedup_ratio":
            parts.append(f"speedup x{fig['value']:.3f} (min {fig['limit']:.3f})")
    refused = [r.split(":", 1)[0] + " not judged" for r in result.get("not_judged") or []]
    if not parts and not refused:
        return "not compared" if not compared else "no regression limits"
    return "; ".join(parts + refused)


def _size(result: dict[str, Any]) -> str:
    s = result.get("summary") or {}
    base, cand = s.get("baseline_bytes"), s.get("candidate_bytes")
    if not cand:
        return "n/a"
    ratio = f" (compression {base / cand:.2f}x)" if base else ""
    return f"{cand:,} B{ratio}"


def _speed(result: dict[str, Any]) -> str:
    s = result.get("summary") or {}
    if s.get("speedup") is None:
        return "not timed"
    shown = f"{s['speedup']:.2f}x"
    if s.get("speedup_low") is not None and s.get("speedup_high") is not None:
        shown += f" [{s['speedup_low']:.2f}, {s['speedup_high']:.2f}]"
    return shown + (" (modelled)" if s.get("timing") else "")


def _row(result: dict[str, Any], compared: bool) -> str:
    s, percent = result.get("summary") or {}, bool(result.get("percent"))
    values = f"{_num(s.get('baseline_value'), percent)} -> {_num(s.get('candidate_value'), percent)}"
    verdict = "pass" if result["passed"] else "**FAIL**"
    cells = [f"`{result['test']}` ({result['budget_name']})", result["metric"], values, _drop(result),
             _versus_saved(result, compared), _size(result), _speed(result), verdict]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _notes(results: list[dict[str, Any]]) -> list[str]:
    lines = []
    for result in results:
        failed = [_figure(f).line() for f in result["figures"] if not f["passed"]]
        why = [f"- `{result['test']}`: {_cell(line)}" for line in failed]
        why += [f"- `{result['test']}`: not judged: {_cell(reason)}" for reason in result.get("not_judged") or []]
        lines += why
    return lines


def markdown_summary(
    results: list[dict[str, Any]], *, budget_source: str | None, compare_source: str | None = None,
    saved_note: str | None = None,
) -> str:
    """The Markdown page of a gate run: a title, one table row per gate, then why, what was not judged, the cache."""
    results = sorted(results, key=lambda r: r["test"])
    failed = sum(not r["passed"] for r in results)
    lines = ["## squeezelab compression gates", ""]
    head = f"{len(results)} gated check(s): {len(results) - failed} pass, {failed} fail. Budget: `{budget_source}`."
    if compare_source:
        head += f" Compared with the saved run `{compare_source}`" + (f" ({saved_note})." if saved_note else ".")
    lines += [head, ""]
    if not results:
        return "\n".join(lines + ["No gated checks ran.", ""])
    lines += ["| gate | metric | baseline -> candidate | drop [interval] | vs saved run | size | speedup [interval] | verdict |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [_row(r, compare_source is not None) for r in results]
    notes = _notes(results)
    if notes:
        lines += ["", "**Why**", "", *notes]
    cached = [r for r in results if r.get("baseline_cache")]
    if cached:
        lines += ["", "**fp32 baselines**", ""]
        lines += [f"- `{r['test']}`: {_CACHE_WORDS.get(r['baseline_cache'], r['baseline_cache'])}" for r in cached]
    return "\n".join(lines) + "\n"
