"""Explorer benchmark (issue #6): slider-to-figure latency through the widget state, and the report.

Without a browser: the explorer on the built-in digits CNN, sliders set from
Python exactly as a front end sets them (observers fire, the FigureWidget's
traces are rewritten), timed from the assignment to the figure holding the
new point.

- cached point: median over 50 slider changes between measured points;
- uncached point: median over distinct (bit width, sparsity) points, each
  compressed and measured on the held-out digits for the first time;
- the saved report's size (its offline render in chromium, with every network
  request blocked, is checked by tests/widgets/test_report_browser.py, which
  prints its time).

Run: ``.venv/bin/python benchmarks/explorer.py``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from squeezelab.engine.default_models import default_model
from squeezelab.widgets import Explorer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=50)
    args = parser.parse_args()
    model, split = default_model("cnn")
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        ex = Explorer(model, split.test, cache=Path(d) / "cache", progress=False)
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
        ex.timings.clear()
        for i in range(args.changes):
            ex.bits_slider.value = points[i % len(points)][0]
            ex.sparsity_slider.value = points[i % len(points)][1]
        cached = ex.timings[-args.changes :]
        report = ex.save_report(Path(d) / "report.html")
        size = report.stat().st_size
        print(f"digits CNN explorer; created (first FigureWidget, baseline measured) in {created:.2f} s")
        print("\n| slider -> figure | median | p90 | n |\n|---|---|---|---|")
        for name, values in (("cached point", cached), ("uncached point (compress + measure)", uncached)):
            q = statistics.quantiles(values, n=10)[-1] if len(values) > 1 else values[0]
            print(f"| {name} | {statistics.median(values) * 1000:.1f} ms | {q * 1000:.1f} ms | {len(values)} |")
        print(f"\nreport: {size:,} bytes ({len(ex.sweep().table)} points)")
        ex.close()


if __name__ == "__main__":
    main()
