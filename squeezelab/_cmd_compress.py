"""``squeezelab compress MODEL --recipe R --output PATH``: one recipe applied to your own model, saved, measured.

MODEL, DATA and ``--recipe`` are read by ``_cmd_inputs`` (every check before the work). With
``--data`` the result is measured against the uncompressed model (``measure_pair``: the paired
drop of the metric and the interleaved speedup, each with its interval); ``--json`` writes both
Points (``Point.to_row()``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from squeezelab._cli_args import timing
from squeezelab.engine.core.errors import ConfigError

__all__ = ["run_compress", "check_output_path", "needs_calibration"]


def check_output_path(path: Path, overwrite: bool) -> None:
    """Refuse, before the work, an --output (or its .json) that exists without --overwrite, is a folder, lies
    under a file, or whose folder is missing or cannot be written (``ArtifactPathError``, in the CLI's words)."""
    from squeezelab.engine.core.paths import file_to_write

    file_to_write(path, what="--output", overwrite=overwrite, overwrite_fix="pass --overwrite to replace it",
                  beside=(".json",))


def needs_calibration(recipes: list[Any], calibration: Path | None) -> None:
    """int8-static calibrates its activation ranges on real inputs, weight-only GPTQ fits its weights to them:
    refuse either without --calibration."""
    from squeezelab.engine.core.runtimes import Int8Static, WeightOnly

    static = [r.label for r in recipes if isinstance(r.runtime, Int8Static)]
    if static and calibration is None:
        raise ConfigError(
            f"{static[0]} calibrates activation ranges on real inputs; pass --calibration CAL.npz "
            "(inputs not in --data), or choose int8-dynamic."
        )
    gptq = [r.label for r in recipes if isinstance(r.runtime, WeightOnly) and r.runtime.method == "gptq"]
    if gptq and calibration is None:
        raise ConfigError(
            f"{gptq[0]} (method = 'gptq') fits each layer's weights to real inputs; pass --calibration CAL.npz "
            "(inputs not in --data), or set method = 'auto' or 'rtn' in the recipe file."
        )


def run_compress(args: argparse.Namespace) -> int:
    """Load, check, compress, save, and with --data measure against the uncompressed model."""
    import squeezelab as sl
    from squeezelab._cmd_inputs import example_for, load_data, load_model
    from squeezelab._cmd_output import figure_table, progress_bar, write_json
    from squeezelab.engine.explore.sweep import Sweep

    output = Path(args.output)
    check_output_path(output, args.overwrite)
    needs_calibration([args.recipe], args.calibration)
    if args.json is not None and args.data is None:
        raise ConfigError("--json writes the measured figures; pass --data DATA.npz to measure them.")
    model = load_model(args.model, args.weights)
    data = load_data(args.data) if args.data is not None else None
    calibration = load_data(args.calibration, "--calibration")[0] if args.calibration is not None else None
    example = example_for(model, data or ((calibration, None) if calibration is not None else None), args.example_shape)
    shown = sys.stderr if args.json == "-" else sys.stdout  # stdout carries the JSON then
    with progress_bar(2 if data is None else 3, "compress", args.quiet) as bar:
        bar.set_postfix_str(args.recipe.label)
        result = sl.compress(model, args.recipe, example_inputs=example, calibration_data=calibration, output=args.output_key)
        bar.update()
        saved = result.save(output, overwrite=args.overwrite)
        bar.update()
        if data is not None:
            pair = sl.measure_pair(model, result, data, example_inputs=example, output=args.output_key,
                                   **timing(args))
            bar.update()
    print(f"saved {saved}: {result.recipe.label}, {result.size_bytes:,} bytes, {result.kind}; its recipe in {saved.name}.json",
          file=shown)
    if data is None:
        return 0
    points = [pair.baseline, pair.candidate]
    print(figure_table(Sweep.from_points(points).table), file=shown)
    if args.json is not None:
        write_json(args.json, {"output": str(saved), "recipe": args.recipe.to_dict(), "points": [p.to_row() for p in points]})
    return 0
