"""Compare recipes side by side on one model: accuracy, size, latency and ratios to fp32.

All candidates are timed in the same interleaved rounds (shuffled every round),
and each speedup is the median of per-round ratios ``baseline / candidate``, so
a noisy phase of the machine hits both sides of every ratio. Every speedup
carries the 95% interval of that median and its reading: "faster" or "slower"
only when the whole interval is on one side of 1.0, otherwise "about the same".
The baseline is the fp32 ONNX Runtime model (``Recipe()``), measured exactly
like the others.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from torch import nn

from squeezelab.engine.compressed import Compressed
from squeezelab.engine.errors import ConfigError
from squeezelab.engine.metrics import outputs_of, scores_of, time_together
from squeezelab.engine.point import Settings
from squeezelab.engine.recipe import Recipe
from squeezelab.engine.samples import read_samples
from squeezelab.engine.scoring import Metric
from squeezelab.engine.stats import ratio_interval

__all__ = ["compare", "compare_compressed", "format_table"]


def compare(
    model: nn.Module,
    recipes: Sequence[Recipe],
    data: Any,
    *,
    example_inputs: Any,
    calibration_data: Any = None,
    metric: Metric | None = None,
    batch_sizes: Sequence[int] = (1, 32),
    rounds: int = 30,
    threads: int | None = 1,
) -> Any:
    """Compress ``model`` with each recipe and compare the results (see ``compare_compressed``).

    The fp32 baseline ``Recipe()`` is added first if it is not among ``recipes``.
    """
    from squeezelab.engine.compression import compress

    baseline = Recipe()
    ordered = [baseline, *[r for r in recipes if r != baseline]]
    labels = [r.label for r in ordered]
    if len(set(labels)) != len(labels):
        twice = sorted({label for label in labels if labels.count(label) > 1})
        raise ConfigError(f"recipes {twice} appear more than once; each row needs its own recipe.")
    results = [
        compress(model, recipe, example_inputs=example_inputs, calibration_data=calibration_data)
        for recipe in ordered
    ]
    return compare_compressed(
        results, data, metric=metric, batch_sizes=batch_sizes, rounds=rounds, threads=threads
    )


def compare_compressed(
    results: Sequence[Compressed],
    data: Any,
    *,
    metric: Metric | None = None,
    batch_sizes: Sequence[int] = (1, 32),
    rounds: int = 30,
    threads: int | None = 1,
) -> Any:
    """A pandas DataFrame, one row per result; the first result is the baseline.

    Columns: ``recipe``, ``kind`` (executable / simulated), ``bits``, ``value`` and ``drop``
    (baseline minus candidate) of the metric, also under its own name (``accuracy`` /
    ``accuracy_drop`` for top-1), ``n_samples``, ``size_bytes``, ``size_ratio`` (candidate /
    baseline), and for
    each batch size ``b``: ``latency_ms_b{b}`` (median), ``speedup_b{b}``
    (median per-round ratio baseline / candidate), ``speedup_b{b}_low`` /
    ``speedup_b{b}_high`` (its 95% interval) and ``speedup_b{b}_reading``
    ("faster", "slower" or "about the same": the interval includes 1.0).
    """
    import pandas as pd

    if not results:
        raise ConfigError("compare_compressed needs at least one result (the baseline first).")
    samples = read_samples(data)
    chosen = Settings(metric=metric, rounds=rounds, warmup=3, threads=threads)
    m = chosen.resolved_metric(has_targets=samples.targets is not None)
    reference = outputs_of(results[0], samples) if m.reference == "baseline" else None
    rows = []
    for c in results:
        value, _ = scores_of(m, outputs_of(c, samples), samples, reference)
        rows.append({"recipe": c.recipe.label, "kind": c.kind, "bits": c.bits, "value": value, m.key: value,
                     "n_samples": len(samples), "size_bytes": c.size_bytes})
    base = rows[0]
    for row in rows:
        row["drop"] = row[f"{m.key}_drop"] = base["value"] - row["value"]
        row["size_ratio"] = row["size_bytes"] / base["size_bytes"]
    for b in batch_sizes:
        timed = time_together(list(results), chosen.replace(batch_size=b), samples)
        for i, row in enumerate(rows):
            row[f"latency_ms_b{b}"] = statistics.median(timed[i])
            speed = ratio_interval(timed[0], timed[i])
            row[f"speedup_b{b}"] = speed.median
            row[f"speedup_b{b}_low"], row[f"speedup_b{b}_high"] = speed.low, speed.high
            row[f"speedup_b{b}_reading"] = speed.reading
    table = pd.DataFrame(rows)
    table.attrs.update({"threads": threads, "rounds": rounds, "batch_sizes": list(batch_sizes), **m.describe(),
                        "metric": m.name, "metric_key": m.key})  # the names a Sweep table's attrs use
    return table


def _metric_columns(table: Any) -> tuple[str, str, Any]:
    """Headers of the value and drop columns, named after the metric, and how a number is shown.

    Percent metrics (top-1 accuracy, agreement) read ``accuracy %`` / ``drop pp``; any other
    metric reads by its key (``cosine`` / ``drop``), with six decimals: a cosine's drop after
    int8 is often below 0.0001.
    """
    key = table.attrs.get("metric_key", table.attrs.get("key", "accuracy"))
    if table.attrs.get("percent", True):
        return f"{key} %", "drop pp", lambda x: f"{100 * x:.2f}"
    return key, "drop", lambda x: f"{x:.6f}"


def format_table(table: Any) -> str:
    """Plain-text rendering: the metric by its name, sizes in bytes, each speedup with its interval and reading.

    A row says "slower" only when the whole interval of its speedup is below 1.0 and
    "faster" only when it is above; otherwise "about the same". The baseline row
    (the first) carries no reading.
    """
    from squeezelab.engine.stats import speed_reading

    batch_sizes = table.attrs.get("batch_sizes", [])
    shown, drop_head, number = _metric_columns(table)
    width = max(8, len(shown))
    lines = []
    header = f"{'recipe':46s} {'kind':10s} {shown:>{width}s} {drop_head:>9s} {'bytes':>9s} {'size':>7s}"
    for b in batch_sizes:
        header += f" {'ms b' + str(b):>9s} {'speedup (95% interval)':<37s}"
    lines.append(header.rstrip())
    lines.append("-" * len(header.rstrip()))
    for position, (_, row) in enumerate(table.iterrows()):
        line = (
            f"{row['recipe']:46s} {row['kind']:10s} {number(row['value']):>{width}s} "
            f"{number(row['drop']):>9s} {row['size_bytes']:9,d} {row['size_ratio']:6.3f}x"
        )
        for b in batch_sizes:
            speed, low, high = row[f"speedup_b{b}"], row[f"speedup_b{b}_low"], row[f"speedup_b{b}_high"]
            spread = f"({low:.2f}-{high:.2f})" if high < float("inf") else "(too few rounds)"
            reading = "" if position == 0 else speed_reading(low, high)
            line += f" {row[f'latency_ms_b{b}']:9.3f} {f'{speed:.2f}x {spread} {reading}':<37s}"
        lines.append(line.rstrip())
    return "\n".join(lines)
