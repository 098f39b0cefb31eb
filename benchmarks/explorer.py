"""Explorer benchmark (issues #6, #11): slider-to-figure latency through the widget state, and the report.

Without a browser: sliders set from Python exactly as a front end sets them
(observers fire, the FigureWidget's traces are rewritten), timed from the
assignment to the figure holding the new point.

1. The built-in digits CNN (top-1 accuracy):
   - cached point: median over ``--changes`` slider changes between measured points;
   - uncached point: median over distinct (bit width, sparsity) points, each
     compressed and measured on the held-out digits for the first time;
   - the saved report's size (its offline render in chromium, with every network
     request blocked, is checked by tests/widgets/test_report_browser.py).
2. The real all-MiniLM-L6-v2 sentence encoder (``SentenceEncoder``, ``--sentences``
   sentences tokenized to ``--max-length``), no targets: cosine to the fp32 embeddings.
   - opening the explorer (the fp32 baseline and the first point, measured on the worker);
   - uncached points: a 4-bit simulated point and int8 dynamic (``int8-dynamic``, which
     quantizes the embeddings too), each with the time spent in every stage the
     progress bar shows (compressing, evaluating, timing);
   - cached points: median over ``--changes`` slider changes.

Times depend on the machine and on what else runs on it; nothing here is asserted.

Run: ``.venv/bin/python benchmarks/explorer.py`` (``--skip-digits`` / ``--skip-minilm`` for one part);
``--markdown benchmarks/results/explorer.md`` also writes the tables the site includes (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from squeezelab.widgets import Explorer

from _machine import cpu_line, load_average  # benchmarks/, beside this script
from _markdown import Page, add_markdown_option


def _row(name: str, values: list[float]) -> str:
    q = statistics.quantiles(values, n=10)[-1] if len(values) > 1 else values[0]
    return f"| {name} | {statistics.median(values) * 1000:.1f} ms | {q * 1000:.1f} ms | {len(values)} |"


def _cached_changes(ex: Explorer, positions: list[tuple[int, float]], changes: int) -> list[float]:
    """Slider changes between already measured points: ``ex.timings`` holds each one's time to the figure."""
    ex.timings.clear()
    for i in range(changes):
        bits, sparsity = positions[i % len(positions)]
        ex.bits_slider.value = bits
        ex.sparsity_slider.value = sparsity
    return ex.timings[-changes:]


def digits(folder: Path, changes: int, page: Page) -> None:
    from squeezelab.engine.zoo.digits import default_model

    model, split = default_model("cnn")
    t0 = time.perf_counter()
    ex = Explorer(model, split.test, cache=folder / "cache", progress=False)
    ex.wait()
    created = time.perf_counter() - t0
    uncached = []
    points = [(b, s) for s in (0.0, 0.5) for b in (7, 6, 5, 4, 3, 2)]
    for b, s in points:
        if ex.sparsity_slider.value != s:  # untimed: moving to the next row of the grid
            ex.sparsity_slider.value = s
            ex.wait()
        t = time.perf_counter()
        ex.bits_slider.value = b  # one slider change, one uncached point
        ex.wait()
        uncached.append(time.perf_counter() - t)
    cached = _cached_changes(ex, points, changes)
    report = ex.save_report(folder / "report.html")
    page.line(f"**The digits CNN** ({ex.labels.name}): the explorer opened (first FigureWidget, baseline measured) in "
              f"{created:.2f} s.")
    page.line()
    page.line("| slider -> figure | median | p90 | n |")
    page.line("| --- | --- | --- | --- |")
    page.line(_row("cached point", cached))
    page.line(_row("uncached point (compress + measure)", uncached))
    page.line()
    page.line(f"The saved report: {report.stat().st_size:,} bytes ({len(ex.sweep())} points).")
    page.line()
    ex.close()


class StageClock:
    """Wraps an explorer's ``evaluate`` to record how long each progress stage of a point took."""

    def __init__(self, ex: Explorer) -> None:
        self.ex, self.real = ex, ex.evaluator.evaluate
        self.stages: dict[str, float] = {}
        ex.evaluator.evaluate = self  # an instance attribute of this benchmark's explorer only

    def __call__(self, recipe: Any, progress: Any = None) -> Any:
        self.stages.clear()
        last = {"stage": None, "t": time.perf_counter()}

        def hook(stage: str, fraction: float) -> None:
            now = time.perf_counter()
            if last["stage"] is not None:
                self.stages[last["stage"]] = self.stages.get(last["stage"], 0.0) + now - last["t"]
            last.update(stage=stage, t=now)
            if progress is not None:
                progress(stage, fraction)

        point = self.real(recipe, progress=hook)
        if last["stage"] is not None:
            self.stages[last["stage"]] = self.stages.get(last["stage"], 0.0) + time.perf_counter() - last["t"]
        return point


def minilm(folder: Path, changes: int, n_sentences: int, max_length: int, rounds: int, page: Page) -> None:
    from squeezelab.engine.zoo import SentenceEncoder, load_minilm, sentences, tokenize

    bert, tokenizer = load_minilm()
    encoder = SentenceEncoder(bert)
    inputs = tokenize(tokenizer, sentences(n_sentences), max_length=max_length)
    t0 = time.perf_counter()
    ex = Explorer(encoder, (inputs, None), metric="cosine_to_baseline", cache=folder / "minilm-cache", rounds=rounds)
    opened = time.perf_counter() - t0  # the constructor returns before the baseline is measured
    ex.wait()
    first = time.perf_counter() - t0
    clock = StageClock(ex)
    page.line(f"**all-MiniLM-L6-v2**, {n_sentences} sentences, max_length {max_length}, {rounds} timing rounds "
              f"({ex.labels.name}): the explorer returned in {opened:.2f} s; the fp32 baseline and {ex.current_point.label} "
              f"were drawn after {first:.1f} s.")
    page.line()
    page.line("| uncached point | slider -> figure | compressing | evaluating | timing | figure |")
    page.line("| --- | --- | --- | --- | --- | --- |")
    for control, value in ((ex.bits_slider, 4), (ex.runtime, "int8-dynamic")):
        t = time.perf_counter()
        control.value = value
        ex.wait()
        total = time.perf_counter() - t
        stages = " | ".join(f"{clock.stages.get(s, 0.0):.1f} s" for s in ("compressing", "evaluating", "timing"))
        point = ex.current_point
        figure = ex.labels.figure(point.value, point.drop.drop if point.drop else None)
        page.line(f"| {point.label} | {total:.1f} s | {stages} | {figure} |")
    ex.runtime.value = "simulated"  # both points are cached now: 8 and 4 bits
    cached = _cached_changes(ex, [(8, 0.0), (4, 0.0)], changes)
    page.line()
    page.line("| slider -> figure | median | p90 | n |")
    page.line("| --- | --- | --- | --- |")
    page.line(_row("cached point", cached))
    page.line()
    ex.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=50, help="cached slider changes to time")
    parser.add_argument("--sentences", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=10, help="timing rounds per MiniLM point")
    parser.add_argument("--skip-digits", action="store_true")
    parser.add_argument("--skip-minilm", action="store_true")
    add_markdown_option(parser)
    args = parser.parse_args()
    page = Page()
    print(cpu_line(), f"load average {load_average()}")
    with tempfile.TemporaryDirectory() as d:
        if not args.skip_digits:
            digits(Path(d), args.changes, page)
        if not args.skip_minilm:
            minilm(Path(d), args.changes, args.sentences, args.max_length, args.rounds, page)
    page.write(args.markdown)


if __name__ == "__main__":
    main()
