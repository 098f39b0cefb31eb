"""The ``squeezelab`` command.

``squeezelab demo`` compresses the built-in default model (a CNN trained on
scikit-learn's digits in seconds) with several recipes, measures every result
on the held-out digits side by side with the fp32 ONNX Runtime baseline,
prints the table, and writes a report, the figures and the int8 model.

``squeezelab lab`` copies the explorer notebook into a working folder (never
over an existing copy) and opens it in JupyterLab.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from squeezelab._cli_args import OneLineParser, batch_sizes, fail, output_folder, port_number, positive_int
from squeezelab.engine.errors import SqueezeError

__all__ = ["build_parser", "demo_recipes", "main", "notebooks_dir", "speed_lines"]


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
    batch_sizes = list(table.attrs.get("batch_sizes", []))
    rows = table.iloc[1:]
    rows = rows[rows["kind"] == "executable"]
    lines = [
        f"- Speed of the executable rows on this CPU ({env.get('cpu', 'unknown')}, {_cpu_kind(env)}; int8 "
        "speed differs between CPU kinds), read from the 95% interval of each speedup:"
    ]
    for b in batch_sizes:
        groups = {reading: [] for reading in ("slower", "about the same", "faster")}
        for _, row in rows.iterrows():
            groups[row[f"speedup_b{b}_reading"]].append(row["recipe"])
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
    from squeezelab.engine.compare import format_table

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
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import squeezelab as sl
    from squeezelab.engine.compare import compare_compressed, format_table
    from squeezelab.engine.environment import environment

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"training the built-in digits {args.model} ...", flush=True)
    model, split = sl.default_model(args.model)
    recipes = [sl.Recipe(), *demo_recipes()]
    print(f"compressing with {len(recipes)} recipes and timing them side by side ...", flush=True)
    results = [
        sl.compress(model, r, example_inputs=split.x_test[:1], calibration_data=split.x_train[:512])
        for r in recipes
    ]
    table = compare_compressed(
        results, split.test, batch_sizes=args.batch_sizes, rounds=args.rounds, threads=args.threads
    )
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
    html = _html_report(model, split, out, args.model)
    if html is not None:
        print(f"trade-off report (one HTML file, opens offline): {html}")
    return 0


def _html_report(model, split, out: Path, kind: str) -> Path | None:
    """Sweep widths x sparsities (plus the int8 runtimes) and write the self-contained HTML report."""
    if importlib.util.find_spec("plotly") is None:
        print("(install squeezelab[widgets] for the HTML trade-off report)")
        return None
    import squeezelab as sl
    from squeezelab.widgets import report

    print("sweeping bit widths x sparsities for the trade-off report ...", flush=True)
    cache = out / "cache"
    int8 = [sl.Recipe(runtime=sl.Int8Dynamic()), sl.Recipe(runtime=sl.Int8Static())]
    sweep = sl.sweep(model, split.test, bits=[8, 6, 4, 3, 2], sparsity=[0.0, 0.5, 0.75], runtime="simulated-huffman",
                     recipes=int8, calibration_data=split.x_train[:512], cache=cache, progress=False)
    sensitivity = sl.layer_sensitivity(model, split.test, bits=[2, 3, 4, 8], sparsity=[0.5, 0.75, 0.9], cache=cache, progress=False)
    best = sweep.table.index.get_loc(sweep.best(max_accuracy_drop=0.01).name)
    return report(sweep, out / "report.html", title=f"squeezelab demo: digits {kind.upper()}", current=best,
                  sensitivity=sensitivity, overwrite=True)


def notebooks_dir() -> Path:
    """The repository's ``notebooks/`` folder, beside the (editable-installed) ``squeezelab`` package."""
    return Path(__file__).resolve().parent.parent / "notebooks"


def run_lab(args: argparse.Namespace, jupyter_args: list[str] | None = None) -> int:
    source = notebooks_dir() / "explore.ipynb"
    if not source.is_file():
        print(
            f"squeezelab lab: cannot find the explorer notebook {source}. The notebooks ship with the "
            "source tree, not the wheel: install squeezelab from a clone with `pip install -e '.[widgets]'`.",
            file=sys.stderr,
        )
        return 2
    if importlib.util.find_spec("jupyterlab") is None:
        print(
            "squeezelab lab: JupyterLab is not installed in this environment "
            f"({sys.executable}); install it with `pip install 'squeezelab[widgets]'`.",
            file=sys.stderr,
        )
        return 2
    folder = Path(args.dir)
    target = folder / source.name
    if target.exists():
        print(f"using your existing {target} (not overwritten; delete it to get a fresh copy)", flush=True)
    else:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        print(f"copied {source.name} to {target}", flush=True)
    command = [sys.executable, "-m", "jupyterlab", str(target)]
    if args.no_browser:
        command.append("--no-browser")
    if args.port is not None:
        command.append(f"--port={args.port}")
    command += jupyter_args or []  # anything else goes to JupyterLab as it is, e.g. --allow-root
    print("$ " + shlex.join(command), flush=True)
    if args.print_command:
        return 0
    if os.name == "posix":
        os.execv(sys.executable, command)  # pragma: no cover - replaces this process
    return subprocess.call(command)  # pragma: no cover - Windows has no real exec


DESCRIPTION = (
    "Compress PyTorch models (quantization, pruning) into real int8 ONNX Runtime models, explore the "
    "accuracy / size / latency trade-off, and gate it in CI."
)


def build_parser() -> argparse.ArgumentParser:
    """The ``squeezelab`` parser: every option has help text and shows its default; values are checked here."""
    from squeezelab._version import __version__

    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = OneLineParser(prog="squeezelab", description=DESCRIPTION, formatter_class=fmt)
    parser.add_argument("--version", action="version", version=f"squeezelab {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser)
    demo = sub.add_parser(
        "demo",
        help="compress the built-in digits model with ten recipes and print the measured table",
        description="Train the built-in digits model (seconds), compress it with ten recipes, measure every "
        "result side by side with the fp32 ONNX Runtime baseline, print the table and write report.md, "
        "results.json, results.csv, report.html and the int8 model into --out.",
        formatter_class=fmt,
    )
    demo.add_argument("--model", choices=["cnn", "mlp"], default="cnn", help="which built-in digits model")
    demo.add_argument("--out", type=output_folder, default="squeezelab-demo",
                      help="folder for the report, the figures and the int8 model (created if missing)")
    demo.add_argument("--rounds", type=positive_int, default=30, help="interleaved timing rounds per batch size")
    demo.add_argument("--batch-sizes", type=batch_sizes, default="1,256",
                      help="comma-separated latency batch sizes, e.g. 1,256")
    demo.add_argument("--threads", type=positive_int, default=1, help="intra-op threads for timing")
    lab = sub.add_parser(
        "lab",
        help="open the explorer notebook in JupyterLab",
        description="Copy notebooks/explore.ipynb into a working folder (never over an existing copy) and "
        "open it in JupyterLab. Other options (e.g. --allow-root, --ServerApp.token=...) go to JupyterLab.",
        formatter_class=fmt,
    )
    lab.add_argument("--dir", type=output_folder, default="squeezelab-notebooks",
                     help="working folder for the notebook copy")
    lab.add_argument("--no-browser", action="store_true", help="start JupyterLab without opening a browser")
    lab.add_argument("--port", type=port_number, default=None, help="port for JupyterLab (None: its own, 8888)")
    lab.add_argument("--print-command", action="store_true",
                     help="copy the notebook and print the JupyterLab command without running it")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "lab":
        return run_lab(args, extra)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return run_demo(args)
    except SqueezeError as exc:  # bad input found during the work: one line, as for arguments
        fail(f"squeezelab {args.command}", str(exc))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
