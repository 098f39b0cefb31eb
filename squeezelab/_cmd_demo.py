"""``squeezelab demo``: the built-in digits model, ten recipes, one measured table, a report of the same rows.

It compresses the built-in default model (a CNN trained on scikit-learn's digits in
seconds) with several recipes, measures every result once on the held-out digits side by
side with the fp32 ONNX Runtime baseline (``compare_points``), prints the table, and writes
report.md, results.json/.csv, the int8 model and report.html. The HTML report shows the
very Points the table printed: the same recipes, measured once, in the same units.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
from pathlib import Path

from squeezelab._cli_args import timing

__all__ = ["demo_recipes", "run_demo", "speed_lines"]


def demo_recipes() -> list:
    import squeezelab as sl

    return [
        sl.Recipe(quantization=sl.Float16()),
        sl.Recipe(runtime=sl.Int8Dynamic()),
        sl.Recipe(runtime=sl.Int8Static()),
        sl.Recipe(runtime=sl.Int8Static(calibration="entropy")),
        sl.Recipe(runtime=sl.Int8Static(calibration="percentile", activations="uint8")),
        sl.Recipe(quantization=sl.LinearQuantization(bits=4), runtime=sl.Simulated()),
        sl.Recipe(quantization=sl.KMeansQuantization(bits=4), runtime=sl.Simulated()),
        sl.Recipe(quantization=sl.FixedPoint(total_bits=8), runtime=sl.Simulated()),
        sl.Recipe(quantization=sl.LinearQuantization(bits=2), runtime=sl.Simulated()),
    ]



def _cpu_kind(env: dict) -> str:
    if env.get("vnni"):
        return "with VNNI"
    return "AVX2 only, no VNNI" if env.get("avx2") else "without AVX2 or VNNI"


def speed_lines(table, env: dict) -> list[str]:
    """What the speedup intervals say, per batch size, about the executable recipes.

    A recipe is called faster or slower only where the whole 95% interval of its speedup
    is on one side of 1.0; nothing is concluded from batch 1 alone.
    """
    from squeezelab.engine.measurement.stats import min_rounds  # not at start-up: the CLI's help stays light

    batch_sizes = list(table.attrs.get("batch_sizes", []))
    rows = table.iloc[1:]
    rows = rows[rows["kind"] == "executable"]
    lines = [
        f"- Speed of the executable rows on this CPU ({env.get('cpu', 'unknown')}, {_cpu_kind(env)}; int8 "
        "speed differs between CPU kinds), read from the 95% interval of each speedup:"
    ]
    # A speedup without an interval (too few rounds) has no verdict: said so, in the CLI's words.
    no_verdict = f"no verdict (too few timing rounds for an interval: pass --rounds {min_rounds()} or more)"
    for b in batch_sizes:
        groups = {reading: [] for reading in ("slower", "about the same", "faster", no_verdict)}
        for _, row in rows.iterrows():
            reading = row[f"speedup_b{b}_reading"]
            groups[reading if reading in groups else no_verdict].append(row["recipe"])
        said = "; ".join(f"{reading}: {', '.join(names)}" for reading, names in groups.items() if names)
        lines.append(f"  - batch {b}: {said or 'no executable rows'}.")
    if batch_sizes == [1]:
        lines.append(
            "  - Only batch 1 was measured, and batch 1 alone is not conclusive: per-call overhead dominates "
            "it. Measure larger batches too (e.g. `--batch-sizes 1,256`) before drawing a conclusion."
        )
    else:
        lines.append("  - No conclusion is drawn from batch 1 alone; compare the larger batch sizes.")
    return lines


def _report(table, env: dict, model_kind: str, saved: Path, reduce_range: bool) -> str:
    from squeezelab.engine.measurement.compare import format_table

    threads = table.attrs.get("threads")
    lines = [
        "# squeezelab demo report",
        "",
        f"Model: built-in digits {model_kind.upper()} (scikit-learn `load_digits`, trained in process); "
        f"{table.attrs.get('metric', 'top-1 accuracy')} on the {int(table['n_samples'].iloc[0])} held-out test "
        f"digits, drop = fp32 minus candidate ({'percentage points' if table.attrs.get('percent', True) else 'in its units'}).",
        f"Latency: median of {table.attrs.get('rounds')} interleaved rounds, {threads} thread(s); "
        "speedup is the median per-round ratio fp32 / candidate, all in one process, with the 95% "
        "interval of that median in brackets.",
        "",
        "```",
        format_table(table),
        "```",
        "",
        "- **executable** rows run as real kernels in ONNX Runtime (int8, float16).",
        "- **simulated** rows store packed sub-8-bit / k-means / fixed-point weights (their size is the real "
        "packed file) but compute with dequantized float weights in PyTorch: their latency is PyTorch's "
        "fp32 latency, not a low-precision kernel's.",
        *speed_lines(table, env),
        f"- reduce_range (7-bit int8 weights) was {'on' if reduce_range else 'off'}; this CPU "
        f"{'lacks' if not env['int8_dot_product_exact'] else 'has'} an exact int8 dot product (VNNI/ARM).",
        f"- Saved: `{saved.name}` (static int8 ONNX) with its recipe in `{saved.name}.json`.",
        "",
        "## Environment",
        "",
        "```json",
        json.dumps(env, indent=2),
        "```",
        "",
    ]
    return "\n".join(lines)


def run_demo(args: argparse.Namespace) -> int:
    """Train, compress with every demo recipe, measure them once, print the table, write the files."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import squeezelab as sl
    from squeezelab.engine.measurement.compare import compare_points, comparison_table, format_table
    from squeezelab.engine.runtime.environment import environment

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"training the built-in digits {args.model} ...", flush=True)
    model, split = sl.models.default_model(args.model)
    recipes = [sl.Recipe(), *demo_recipes()]
    print(f"compressing with {len(recipes)} recipes and timing them side by side ...", flush=True)
    results = [
        sl.compress(model, r, example_inputs=split.x_test[:1], calibration_data=split.x_train[:512])
        for r in recipes
    ]
    points = compare_points(results, split.test, batch_sizes=args.batch_sizes, **timing(args))
    table = comparison_table(points)
    print()
    print(format_table(table))
    env = environment()
    saved = out / "digits.int8.onnx"
    static = next(c for c in results if c.recipe == sl.Recipe(runtime=sl.Int8Static()))
    static.save(saved, overwrite=True)  # the very model measured in the table
    (out / "results.json").write_text(
        json.dumps({"environment": env, "rows": table.to_dict(orient="records"), **table.attrs}, indent=2) + "\n"
    )
    table.to_csv(out / "results.csv", index=False)
    (out / "report.md").write_text(_report(table, env, args.model, saved, static.details["reduce_range"]))
    print("\nsimulated rows compute in PyTorch with dequantized weights; executable rows run in ONNX Runtime.")
    print(f"report: {out / 'report.md'}   figures: {out / 'results.json'}   model: {saved}")
    html = _html_report(model, split, results, points, out, args.model)
    if html is not None:
        print(f"trade-off report (one HTML file, opens offline): {html}")
    return 0


def _html_report(model, split, results, points: dict, out: Path, kind: str) -> Path | None:
    """The HTML report of the very Points the table printed (the largest batch size's latency), plus sensitivity."""
    if importlib.util.find_spec("plotly") is None:
        print("(install squeezelab[widgets] for the HTML trade-off report)")
        return None
    import squeezelab as sl
    from squeezelab.engine.core.errors import ConfigError
    from squeezelab.engine.explore.evaluation import asked_sparsity
    from squeezelab.engine.explore.sweep import Sweep
    from squeezelab.widgets import report
    from squeezelab.widgets.html_report import choose_point

    batch = max(points)  # batch 1 alone is not conclusive: the report's latency panel shows the largest batch
    extra = [{"sparsity": asked_sparsity(c.recipe)} for c in results]
    measured = Sweep.from_points(points[batch], extra)
    print("measuring per-layer sensitivity for the report ...", flush=True)
    sensitivity = sl.layer_sensitivity(model, split.test, bits=[2, 3, 4, 8], sparsity=[0.5, 0.75, 0.9],
                                       cache=out / "cache", progress=False)
    try:
        current, rule = choose_point(measured, max_drop=0.01, objective="size", executable_only=True)
    except ConfigError:  # no executable row within one point: the report says no recipe was chosen
        current, rule = None, None
    return report(measured, out / "report.html", title=f"squeezelab demo: digits {kind.upper()}", current=current,
                  rule=rule, sensitivity=sensitivity, overwrite=True)
