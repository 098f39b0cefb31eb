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

from collections.abc import Sequence
from typing import Any

from torch import nn

from squeezelab.engine.core.errors import ConfigError
from squeezelab.engine.core.recipe import Recipe
from squeezelab.engine.core.samples import read_samples
from squeezelab.engine.measurement.metrics import outputs_of, point_of, scores_of, settings_of, time_together
from squeezelab.engine.measurement.point import Point, Settings
from squeezelab.engine.measurement.stats import paired_drop_interval, ratio_interval, speed_reading
from squeezelab.engine.pipeline.compress import compress, compress_for_data
from squeezelab.engine.pipeline.compressed import Compressed

__all__ = ["compare", "compare_compressed", "compare_points", "comparison_table", "format_table"]


def compare(
    model: nn.Module,
    recipes: Sequence[Recipe],
    data: Any,
    *,
    example_inputs: Any,
    calibration_data: Any = None,
    settings: Settings | None = None,
    batch_sizes: Sequence[int] = (1, 32),
    **overrides: Any,
) -> Any:
    """Compress ``model`` with each recipe and compare the results (see ``compare_compressed``).

    How to measure is ``settings`` (default ``Settings()``), with keyword overrides such as
    ``metric=``, ``rounds=`` or ``threads=``, as for ``measure``; each of ``batch_sizes`` is timed.

    The fp32 baseline ``Recipe()`` is added first if it is not among ``recipes``; it is made first,
    with ``data`` checked against the model and its export compared with PyTorch on a sample of
    ``data`` (``compress_for_data``), so bad data fails before any other recipe is compressed.
    """
    baseline = Recipe()
    ordered = [baseline, *[r for r in recipes if r != baseline]]
    labels = [r.label for r in ordered]
    if len(set(labels)) != len(labels):
        twice = sorted({label for label in labels if labels.count(label) > 1})
        raise ConfigError(f"recipes {twice} appear more than once; each row needs its own recipe.")
    samples = read_samples(data)  # read once; checked with the baseline, before any recipe's slow work
    baseline_result = compress_for_data(model, baseline, samples.inputs, "the evaluation data", example_inputs=example_inputs)
    results = [baseline_result] + [
        compress(model, recipe, example_inputs=example_inputs, calibration_data=calibration_data)
        for recipe in ordered[1:]
    ]
    return compare_compressed(results, samples, settings=settings_of(settings, overrides), batch_sizes=batch_sizes)


def compare_points(
    results: Sequence[Compressed],
    data: Any,
    *,
    settings: Settings | None = None,
    batch_sizes: Sequence[int] = (1, 32),
    **overrides: Any,
) -> dict[int, list[Point]]:
    """Measure every result once: ``{batch size: [Point, ...]}``, the first result the baseline.

    The metric is evaluated once per result (its per-sample scores give each candidate's paired
    drop with its interval); latency is timed at each batch size, all results in the same
    interleaved rounds, so each candidate's ``speedup`` is the median per-round ratio with its
    interval. Every batch size's list holds the same values and drops; only the timing differs.
    A report and a printed table built from these Points show the same measurement.
    """
    if not results:
        raise ConfigError("compare_compressed needs at least one result (the baseline first).")
    samples = read_samples(data)
    chosen = settings_of(settings, overrides)
    m = chosen.resolved_metric(has_targets=samples.targets is not None)
    reference = outputs_of(results[0], samples) if m.reference == "baseline" else None
    scored = [scores_of(m, outputs_of(c, samples), samples, reference) for c in results]
    base_scores = scored[0][1]
    drops = [
        paired_drop_interval(base_scores, s, chosen.confidence) if i and base_scores is not None and s is not None else None
        for i, (_, s) in enumerate(scored)
    ]
    points: dict[int, list[Point]] = {}
    for b in batch_sizes:
        settings = chosen.replace(batch_size=b)
        timed = time_together(list(results), settings, samples)
        points[b] = []
        for i, (c, (value, scores)) in enumerate(zip(results, scored)):
            point = point_of(c, metric=m, value=value, scores=scores, n_samples=len(samples), latency=timed[i], settings=settings)
            if i:
                point = point.with_baseline(drops[i], ratio_interval(timed[0], timed[i], confidence=chosen.confidence))
            points[b].append(point)
    return points


def compare_compressed(
    results: Sequence[Compressed],
    data: Any,
    *,
    settings: Settings | None = None,
    batch_sizes: Sequence[int] = (1, 32),
    **overrides: Any,
) -> Any:
    """A pandas DataFrame, one row per result; the first result is the baseline.

    Columns: ``recipe``, ``kind`` (executable / simulated), ``bits``, ``value`` and ``drop``
    (baseline minus candidate) of the metric, also under its own name (``accuracy`` /
    ``accuracy_drop`` for top-1), ``n_samples``, ``size_bytes``, ``compression`` (baseline
    bytes / candidate bytes, the unit reports and budgets use), ``size_ratio`` (its inverse), and
    for each batch size ``b``: ``latency_ms_b{b}`` (median), ``latency_ms_b{b}_p25`` /
    ``latency_ms_b{b}_p75`` (the middle half of the rounds), ``speedup_b{b}`` (median per-round
    ratio baseline / candidate), ``speedup_b{b}_low`` / ``speedup_b{b}_high`` (its 95% interval)
    and ``speedup_b{b}_reading`` ("faster", "slower" or "about the same": the interval includes
    1.0). ``table.attrs["points"]`` is not set; ``compare_points`` gives the Points themselves.
    """
    return comparison_table(compare_points(results, data, settings=settings_of(settings, overrides), batch_sizes=batch_sizes))


def comparison_table(points: dict[int, list[Point]]) -> Any:
    """The DataFrame of ``compare_compressed`` from ``compare_points``' Points (its attrs' ``threads`` and
    ``rounds``: those the Points were measured with)."""
    import pandas as pd  # heavy: loaded when a table is made

    batch_sizes = list(points)
    first = points[batch_sizes[0]]
    base = first[0]
    rows = []
    for p in first:
        drop = 0.0 if p is base else (p.drop.drop if p.drop is not None else base.value - p.value)
        rows.append({"recipe": p.label, "kind": p.kind, "bits": p.bits, "value": p.value, p.metric_key: p.value,
                     "drop": drop, f"{p.metric_key}_drop": drop, "n_samples": p.n_samples, "size_bytes": p.size_bytes,
                     "compression": base.size_bytes / p.size_bytes, "size_ratio": p.size_bytes / base.size_bytes})
    for b in batch_sizes:
        for row, p in zip(rows, points[b]):
            row[f"latency_ms_b{b}"] = p.latency_ms
            row[f"latency_ms_b{b}_p25"], row[f"latency_ms_b{b}_p75"] = p.latency_p25_ms, p.latency_p75_ms
            if p.speedup is None:  # the baseline against itself: exactly 1.0 in every round
                row[f"speedup_b{b}"] = row[f"speedup_b{b}_low"] = row[f"speedup_b{b}_high"] = 1.0
                row[f"speedup_b{b}_reading"] = "about the same"
            else:
                speed = p.speedup
                row[f"speedup_b{b}"], row[f"speedup_b{b}_low"], row[f"speedup_b{b}_high"] = speed.median, speed.low, speed.high
                row[f"speedup_b{b}_reading"] = speed.reading
    table = pd.DataFrame(rows)
    table.attrs.update({"threads": base.threads, "rounds": base.latency_rounds, "batch_sizes": batch_sizes, "name": base.metric,
                        "key": base.metric_key, "percent": bool(base.percent),
                        "metric": base.metric, "metric_key": base.metric_key})  # the names a Sweep table's attrs use
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
    """Plain-text rendering: the metric by its name, sizes in bytes and as compression (fp32 bytes / these
    bytes), each speedup with its interval and reading.

    A row says "slower" only when the whole interval of its speedup is below 1.0 and
    "faster" only when it is above; otherwise "about the same". The baseline row
    (the first) carries no reading.
    """
    batch_sizes = table.attrs.get("batch_sizes", [])
    shown, drop_head, number = _metric_columns(table)
    width = max(8, len(shown))
    lines = []
    header = f"{'recipe':46s} {'kind':10s} {shown:>{width}s} {drop_head:>9s} {'bytes':>9s} {'compression':>11s}"
    for b in batch_sizes:
        header += f" {'ms b' + str(b):>9s} {'speedup (95% interval)':<37s}"
    lines.append(header.rstrip())
    lines.append("-" * len(header.rstrip()))
    base_bytes = table["size_bytes"].iloc[0] if len(table) else 0
    for position, (_, row) in enumerate(table.iterrows()):
        line = (  # compression = baseline bytes / these bytes: the unit of the report and the budget gate
            f"{row['recipe']:46s} {row['kind']:10s} {number(row['value']):>{width}s} "
            f"{number(row['drop']):>9s} {row['size_bytes']:9,d} {base_bytes / row['size_bytes']:10.2f}x"
        )
        for b in batch_sizes:
            speed, low, high = row[f"speedup_b{b}"], row[f"speedup_b{b}_low"], row[f"speedup_b{b}_high"]
            spread = f"({low:.2f}-{high:.2f})" if high < float("inf") else "(too few rounds)"
            reading = "" if position == 0 or not high < float("inf") else speed_reading(low, high)  # no interval: no verdict
            line += f" {row[f'latency_ms_b{b}']:9.3f} {f'{speed:.2f}x {spread} {reading}':<37s}"
        lines.append(line.rstrip())
    return "\n".join(lines)
