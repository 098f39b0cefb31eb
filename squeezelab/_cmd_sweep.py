"""``squeezelab sweep`` and ``squeezelab report``: the API's grid, table and HTML report, for your own model.

Both run ``sweep(model, data, bits=..., sparsity=..., recipes=...)`` (cached: a second run, or a
report after a sweep with the same arguments, reads the measured points back), print the table,
and ``report`` writes ``report(sweep, path)`` with the point ``choose_point`` picks (an executable
one unless ``--include-simulated``) and the rule it used. The defaults hold only what applies to the
model given (``engine.explore.grid``): an ONNX file has no PyTorch layers to prune or quantize in
simulation, so its sweep is ONNX Runtime's recipes that apply to it (int8-dynamic unless
convolutions hold most weights, int8-static with ``--calibration``, float16), and what was left out
is printed with the option that would add it. A point asked for that cannot run is refused before
any work, in these options' words.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from squeezelab._cli_args import timing
from squeezelab.engine.core.errors import ConfigError

__all__ = ["run_sweep", "run_report", "CLI_BITS", "CLI_SPARSITY"]

# The command's grid for a PyTorch model when --bits / --sparsity are left out (smaller than the API's).
CLI_BITS = [8, 4, 2]
CLI_SPARSITY = [0.0, 0.5]


def _grid(args: argparse.Namespace, onnx: bool) -> tuple[list[int] | None, list[float] | None, list[Any]]:
    """(bits, sparsity, recipes) to sweep; an ONNX file takes recipes only (None, None: the ones that apply)."""
    from squeezelab.engine.explore.grid import default_bits

    recipes = list(args.recipe or [])
    if onnx:
        if args.bits or args.sparsity:
            raise ConfigError(
                "--bits/--sparsity need the PyTorch model: an ONNX file cannot be pruned or quantized in simulation; "
                "leave them out and pass --recipe NAME (e.g. int8-dynamic, float16) for each point."
            )
        return ([], [], recipes) if recipes else (None, None, [])
    widths = default_bits(args.runtime)
    bits = args.bits if args.bits is not None else [b for b in CLI_BITS if b in widths] or list(widths)
    sparsity = args.sparsity if args.sparsity is not None else list(CLI_SPARSITY)
    if bool(bits) != bool(sparsity):
        raise ConfigError("--bits and --sparsity both need values, or both be empty (then --recipe gives the points).")
    if not bits and not recipes:
        raise ConfigError("nothing to sweep: pass --bits and --sparsity, or --recipe.")
    return bits, sparsity, recipes


def _check_applicable(args: argparse.Namespace, model: Any, bits: list[int] | None, recipes: list[Any]) -> None:
    """A point asked for by --recipe or --runtime that cannot run on MODEL: refused now, in the command's words."""
    import squeezelab as sl
    from squeezelab.engine.core import choices
    from squeezelab.engine.explore.grid import not_applicable
    from squeezelab.engine.runtime.onnx_files import load_onnx_model

    target = load_onnx_model(model)[0] if args.model.is_onnx else model
    asked = [("--recipe", recipe) for recipe in recipes]
    runtime = choices.resolve("runtime", args.runtime)
    if bits and not args.model.is_onnx and runtime.onnx:  # the grid's int8 point stands for the whole grid
        asked.append(("--runtime", sl.Recipe(runtime=runtime)))
    for option, recipe in asked:
        reason = not_applicable(target, recipe, calibrated=args.calibration is not None)
        if reason is not None:
            raise ConfigError(f"{option} {recipe.label} does not apply to {args.model.text}: {reason.why}; {reason.cli_fix}.")


def _left_out(result: Any, stream: Any) -> None:
    """What the default grid left out, why, and the option that adds it."""
    for reason in result.left_out:
        print(f"left out of the default grid: {reason.label}: {reason.why}; {reason.cli_fix}.", file=stream)


def _measured(args: argparse.Namespace) -> Any:
    """Load and check everything, then run the sweep (a progress bar unless --quiet or not a terminal)."""
    import squeezelab as sl
    from squeezelab._cmd_compress import needs_calibration
    from squeezelab._cmd_inputs import example_for, load_data, load_model

    model = load_model(args.model, args.weights)
    bits, sparsity, recipes = _grid(args, onnx=args.model.is_onnx)
    grid_static = [sl.Recipe(runtime=sl.Int8Static())] if bits and args.runtime == "int8-static" else []
    needs_calibration(recipes + grid_static, args.calibration)
    _check_applicable(args, model, bits, recipes)
    data = load_data(args.data)
    calibration = load_data(args.calibration, "--calibration")[0] if args.calibration is not None else None
    example_for(model, data, None)  # a factory's example is the data's first sample (the engine takes it from data)
    cache: Any = False if args.no_cache else (args.cache if args.cache is not None else True)
    progress = not args.quiet and sys.stderr.isatty()
    return sl.sweep(
        model, data, bits=bits, sparsity=sparsity, quantization=args.quantization, pruning=args.pruning,
        runtime=None if args.model.is_onnx else args.runtime, recipes=recipes, calibration_data=calibration, cache=cache, progress=progress,
        output=args.output_key, **timing(args),
    )


def run_sweep(args: argparse.Namespace) -> int:
    """Sweep, print the table, write --json (Point.to_row() of every point) and --csv."""
    from squeezelab._cmd_output import figure_table, write_json

    result = _measured(args)
    shown = sys.stderr if args.json == "-" else sys.stdout
    print(figure_table(result.table), file=shown)
    _left_out(result, shown)
    if args.csv is not None:
        result.table.to_csv(args.csv, index=False)
    if args.json is not None:
        write_json(args.json, {**result.table.attrs, "points": [p.to_row() for p in result.points]})
    return 0


def run_report(args: argparse.Namespace) -> int:
    """Sweep (cached), choose a point by the rule, write the self-contained HTML report."""
    from squeezelab._cmd_output import figure_table
    from squeezelab.widgets.html_report import _check_path, choose_point, report

    path = Path(args.output).absolute()
    _check_path(path, args.overwrite)  # before the work
    result = _measured(args)
    print(figure_table(result.table))
    _left_out(result, sys.stdout)
    try:  # a recommendation is a file to ship: executable points only, unless --include-simulated
        current, rule = choose_point(result, max_drop=args.max_drop, objective=args.objective,
                                     executable_only=not args.include_simulated)
    except ConfigError as exc:  # no point meets the rule: the report says none was chosen, and why here
        current, rule = None, None
        print(f"no recipe chosen: {exc}".replace("executable_only=False", "--include-simulated"))  # the CLI's words
    else:
        print(f"chosen: {result.table.iloc[current]['label']} ({rule})")
    written = report(result, path, title=args.title, current=current, rule=rule, overwrite=args.overwrite)
    print(f"report (one HTML file, opens offline): {written}")
    return 0
