"""The ``squeezelab`` command: this module builds the parser and dispatches; each command lives in its own module.

- ``demo`` (``_cmd_demo``): the built-in digits model, ten recipes, one measured table and report.
- ``lab`` (``_cmd_lab``): the explorer notebook in JupyterLab.
- ``compress`` (``_cmd_compress``): one recipe on your model (an ONNX file or a PyTorch factory), saved and measured.
- ``sweep`` / ``report`` (``_cmd_sweep``): the API's grid and table, and its self-contained HTML report.
- ``gate`` (``_cmd_gate``): the budget verdict of ``pytest --compress-budget``, exit status 0 / 1.

Every argument is checked before the work (``_cli_args``, ``_cmd_inputs``): a bad one is one line on
stderr and exit status 2, never a traceback; so is a ``SqueezeError`` the engine raises on bad input,
its API words (``overwrite=True``, ``calibration_data=``) put in the CLI's (``_cli_args.cli_words``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from squeezelab._cli_args import OneLineParser, batch_sizes, cli_words, fail, output_folder, port_number, positive_int
from squeezelab._cmd_demo import demo_recipes, run_demo, speed_lines
from squeezelab._cmd_inputs import (
    drop_limit,
    example_shape,
    fraction_list,
    model_spec,
    npz_file,
    recipe_spec,
    table_choice,
    weights_file,
    width_list,
)
from squeezelab._cmd_lab import notebooks_dir, run_lab
from squeezelab._cmd_output import file_target, json_target
from squeezelab.engine.core import choices
from squeezelab.engine.core.errors import SqueezeError

__all__ = ["build_parser", "demo_recipes", "main", "notebooks_dir", "speed_lines"]

_FMT = argparse.ArgumentDefaultsHelpFormatter
_RECIPE_HELP = f"a recipe name ({', '.join(choices.names('recipe'))}) or a recipe.toml file (Recipe.to_toml())"


DESCRIPTION = (
    "Compress PyTorch models (quantization, pruning) into real int8 ONNX Runtime models, explore the "
    "accuracy / size / latency trade-off, and gate it in CI."
)


def _add_demo(sub) -> None:
    demo = sub.add_parser(
        "demo",
        help="compress the built-in digits model with ten recipes and print the measured table",
        description="Train the built-in digits model (seconds), compress it with ten recipes, measure every "
        "result side by side with the fp32 ONNX Runtime baseline, print the table and write report.md, "
        "results.json, results.csv, report.html (the same rows) and the int8 model into --out.",
        formatter_class=_FMT,
    )
    demo.add_argument("--model", choices=["cnn", "mlp"], default="cnn", help="which built-in digits model")
    demo.add_argument("--out", type=output_folder, default="squeezelab-demo",
                      help="folder for the report, the figures and the int8 model (created if missing)")
    demo.add_argument("--rounds", type=positive_int, default=None,
                      help="interleaved timing rounds per batch size (default: the API's, squeezelab.Settings().rounds)")
    demo.add_argument("--batch-sizes", type=batch_sizes, default="1,256",
                      help="comma-separated latency batch sizes, e.g. 1,256")
    demo.add_argument("--threads", type=positive_int, default=None, help=_THREADS_HELP)


def _add_lab(sub) -> None:
    lab = sub.add_parser(
        "lab",
        help="open the explorer notebook in JupyterLab",
        description="Copy notebooks/explore.ipynb into a working folder (never over an existing copy) and "
        "open it in JupyterLab. Other options (e.g. --allow-root, --ServerApp.token=...) go to JupyterLab.",
        formatter_class=_FMT,
    )
    lab.add_argument("--dir", type=output_folder, default="squeezelab-notebooks",
                     help="working folder for the notebook copy")
    lab.add_argument("--no-browser", action="store_true", help="start JupyterLab without opening a browser")
    lab.add_argument("--port", type=port_number, default=None, help="port for JupyterLab (None: its own, 8888)")
    lab.add_argument("--print-command", action="store_true",
                     help="copy the notebook and print the JupyterLab command without running it")


def _add_model_options(parser: argparse.ArgumentParser, *, model: bool = True) -> None:
    """MODEL, --weights, --output-key: how every model command finds and runs your model."""
    if model:
        parser.add_argument("model", type=model_spec, metavar="MODEL",
                            help="an ONNX file (model.onnx) or a PyTorch factory package.module:function "
                            "(or file.py:function) that returns the nn.Module")
    parser.add_argument("--weights", type=weights_file, default=None,
                        help="weights for a PyTorch factory: FILE.safetensors (or a .pt/.pth state dict, read with "
                        "torch.load(weights_only=True)); None: the factory's own")
    parser.add_argument("--output-key", default=None,
                        help="which model output is evaluated and exported, e.g. pooler_output; None: the first tensor")


# The timing options default to None: the API's defaults apply (squeezelab.Settings, read where the command measures),
# so the command line and the API never disagree on how many rounds or threads.
_THREADS_HELP = ("intra-op threads for timing (default: the API's, squeezelab.Settings().threads: one thread, the "
                 "steadiest timings and ratios that hold on a busy machine)")


def _add_timing_options(parser: argparse.ArgumentParser, rounds_default: str) -> None:
    parser.add_argument("--rounds", type=positive_int, default=None,
                        help=f"interleaved timing rounds (default: the API's, {rounds_default})")
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help="latency batch size (default: the API's, squeezelab.Settings().batch_size)")
    parser.add_argument("--threads", type=positive_int, default=None, help=_THREADS_HELP)
    parser.add_argument("--quiet", action="store_true", help="no progress bar (it is off anyway when stderr is not a terminal)")


def _add_compress(sub) -> None:
    p = sub.add_parser(
        "compress", help="compress your model (an ONNX file or a PyTorch factory) with one recipe",
        description="Apply one recipe to MODEL, save the result (and its recipe as PATH.json), and with --data "
        "measure it against the uncompressed model: the paired drop of the metric and the speedup, each with "
        "its interval. DATA is an .npz: arrays by input name, targets under 'targets' or 'labels' (none: the "
        "metric compares with the uncompressed model's outputs).",
        formatter_class=_FMT,
    )
    _add_model_options(p)
    p.add_argument("--recipe", type=recipe_spec, required=True, help=_RECIPE_HELP)
    p.add_argument("--output", required=True, help="the compressed model file to write (e.g. model.int8.onnx)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.add_argument("--data", type=npz_file, default=None, help="evaluation data (.npz) to measure the result on")
    p.add_argument("--calibration", type=npz_file, default=None,
                   help="calibration inputs (.npz) for int8-static and weight-only GPTQ; keep them apart from --data")
    p.add_argument("--example-shape", type=example_shape, default=None,
                   help="a float32 example batch's shape for a factory without --data/--calibration, e.g. 1,1,8,8")
    p.add_argument("--json", type=json_target, default=None,
                   help="write the measured figures (Point.to_row() of baseline and result) as JSON to this file, or - for stdout")
    _add_timing_options(p, "squeezelab.Settings().rounds, as measure_pair")


def _add_grid_options(p: argparse.ArgumentParser) -> None:
    _add_model_options(p)
    p.add_argument("--data", type=npz_file, required=True, help="evaluation data (.npz): arrays by input name, 'targets'")
    p.add_argument("--bits", type=width_list, default=None,
                   help="weight widths, e.g. 8,4,2 (None: 8,4,2; 8 for int8 runtimes, 8,4 for weight-only; not for ONNX files)")
    p.add_argument("--sparsity", type=fraction_list, default=None,
                   help="sparsities, e.g. 0,0.5 (None: 0,0.5; not for ONNX files)")
    for option, kind, default, what in (
        ("--quantization", "quantization", "linear-symmetric", "how the grid quantizes weights"),
        ("--pruning", "pruning", "magnitude", "how the grid prunes"),
        ("--runtime", "runtime", "simulated", "how the grid's points run"),
    ):
        p.add_argument(option, type=table_choice(kind), default=default, help=f"{what}: {', '.join(choices.names(kind))}")
    p.add_argument("--recipe", type=recipe_spec, action="append", default=None,
                   help=_RECIPE_HELP + "; repeat for more; measured beside the grid (None: for an ONNX file, "
                   "ONNX Runtime's recipes that apply to it: int8-dynamic, int8-static with --calibration, float16)")
    p.add_argument("--calibration", type=npz_file, default=None, help="calibration inputs (.npz) for int8-static and weight-only GPTQ")
    p.add_argument("--cache", type=output_folder, default=None,
                   help="cache folder for measured points (None: ~/.cache/squeezelab or $SQUEEZELAB_CACHE)")
    p.add_argument("--no-cache", action="store_true", help="measure every point again, store nothing")
    _add_timing_options(p, "squeezelab.Settings.for_sweeps().rounds, as sweep")


def _add_sweep_and_report(sub) -> None:
    sweep = sub.add_parser(
        "sweep", help="measure a grid of bit widths x sparsities (and recipes) on your model, print the table",
        description="Measure MODEL at every (bits, sparsity) of the grid, plus --recipe points and the fp32 "
        "baseline, as sweep() does (cached), and print the table in the report's units.", formatter_class=_FMT,
    )
    _add_grid_options(sweep)
    sweep.add_argument("--json", type=json_target, default=None, help="write every Point.to_row() as JSON to this file, or -")
    sweep.add_argument("--csv", type=file_target, default=None, help="write the sweep table as CSV to this file")
    report = sub.add_parser(
        "report", help="sweep your model (cached) and write the self-contained HTML report",
        description="The sweep of 'squeezelab sweep' (the same options; a cache hit after it), then one HTML file "
        "that opens offline: trade-off figures, Pareto tables, the chosen recipe and the rule that chose it.",
        formatter_class=_FMT,
    )
    _add_grid_options(report)
    report.add_argument("--output", required=True, help="the .html file to write")
    report.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    report.add_argument("--title", default="squeezelab report", help="the page title")
    report.add_argument("--max-drop", type=drop_limit, default=0.01,
                        help="the rule's largest drop of the metric, in its units (0.01 = one point of top-1 accuracy)")
    report.add_argument("--objective", choices=["size", "latency"], default="size",
                        help="the rule chooses the smallest file or the lowest latency within --max-drop")
    report.add_argument("--include-simulated", action="store_true",
                        help="let the rule choose a simulated point too (not a file to ship); by default it chooses "
                        "among executable points")
    report.add_argument("--executable-only", action="store_true",
                        help="deprecated: the rule chooses among executable points by default (accepted, no effect)")


def _add_gate(sub) -> None:
    p = sub.add_parser(
        "gate", help="judge a candidate against a baseline with the budget of pytest --compress-budget (exit 0/1)",
        description="Measure BASELINE and CANDIDATE together on DATA and judge them with the budget "
        "([tool.squeezelab.budget] of pyproject.toml), exactly as pytest --compress-budget does. Exit status 0: "
        "every figure within budget; 1: some figure over; 2: bad arguments.", formatter_class=_FMT,
    )
    p.add_argument("baseline", type=model_spec, metavar="BASELINE", help="the uncompressed model: ONNX file or factory")
    p.add_argument("candidate", type=model_spec, metavar="CANDIDATE", help="the compressed model: ONNX file or factory")
    _add_model_options(p, model=False)
    p.add_argument("--data", type=npz_file, required=True, help="evaluation data (.npz): arrays by input name, 'targets'")
    p.add_argument("--budget", type=Path, default=Path("pyproject.toml"), help="the budget file")
    p.add_argument("--name", default="default", help="which budget of the file ([tool.squeezelab.budget.NAME])")
    p.add_argument("--json", type=json_target, default=None, help="write the verdict as JSON to this file, or -")
    p.add_argument("--junit", type=file_target, default=None, help="write JUnit XML (one test case per figure) to this file")
    p.add_argument("--save", type=file_target, default=None,
                   help="write this gate's result (per-sample scores, bytes, speedup, data fingerprint, CPU) as JSON, "
                   "for a later --compare")
    p.add_argument("--compare", type=Path, default=None,
                   help="judge max_regression, max_size_growth and min_speedup_ratio against a result saved with --save")
    p.add_argument("--markdown", type=file_target, default=None,
                   help="write a Markdown summary to this file (also appended to $GITHUB_STEP_SUMMARY when set)")
    p.add_argument("--cache", type=output_folder, default=None,
                   help="where a PyTorch baseline's fp32 export and outputs are kept between runs "
                   "(default: gate-baselines in $SQUEEZELAB_CACHE or ~/.cache/squeezelab)")
    p.add_argument("--no-cache", action="store_true", help="export and measure the baseline every time")


def build_parser() -> argparse.ArgumentParser:
    """The ``squeezelab`` parser: every option has help text and shows its default; values are checked here."""
    from squeezelab._version import __version__

    parser = OneLineParser(prog="squeezelab", description=DESCRIPTION, formatter_class=_FMT)
    parser.add_argument("--version", action="version", version=f"squeezelab {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser)
    for add in (_add_demo, _add_lab, _add_compress, _add_sweep_and_report, _add_gate):
        add(sub)
    return parser


def _runner(command: str):
    """The function that runs ``command`` (looked up now, so tests can replace it in this module)."""
    from squeezelab import _cmd_compress, _cmd_gate, _cmd_sweep

    return {"demo": run_demo, "compress": _cmd_compress.run_compress, "sweep": _cmd_sweep.run_sweep,
            "report": _cmd_sweep.run_report, "gate": _cmd_gate.run_gate}[command]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "lab":
        return run_lab(args, extra)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return _runner(args.command)(args)
    except SqueezeError as exc:  # bad input found while loading or working: one line, as for arguments
        fail(f"squeezelab {args.command}", cli_words(str(exc)))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
