"""What the model commands print and write: a progress bar, the figure table, JSON.

The table has the report's units: the metric by its own name (in % for percent metrics), its drop
(baseline minus candidate), the size in bytes and as compression (baseline bytes / these bytes),
the median latency with the middle half of its timed rounds, and the speedup with its 95% interval
and reading ("about the same" when the interval includes 1.0).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["progress_bar", "figure_table", "write_json", "write_text", "json_target", "file_target"]


def progress_bar(total: int, desc: str, quiet: bool) -> Any:
    """A tqdm bar on stderr; off with ``--quiet`` or when stderr is not a terminal (CI logs stay clean)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="step", disable=quiet or not sys.stderr.isatty(), file=sys.stderr)


def _value(value: Any, percent: bool) -> str:
    from squeezelab.engine.measurement.stats import number_text

    return number_text(value * 100 if value is not None and percent else value, ".2f" if percent else ".4f")


def figure_table(table: Any) -> str:
    """Plain text of a sweep table (``SweepTable.from_points(...).table``): one line per point."""
    from squeezelab.engine.measurement.stats import number_text, row_speedup_text  # not at start-up: the CLI's help stays light

    percent = bool(table.attrs.get("percent", False))
    name = str(table.attrs.get("metric", "value")) + (" %" if percent else "")
    drop = "drop pp" if percent else "drop"
    width = max(10, len(name))
    label_width = max([6, *(len(str(label)) for label in table["label"])])
    head = (f"{'recipe':{label_width}s} {'kind':10s} {name:>{width}s} {drop:>9s} {'bytes':>11s} {'compression':>11s} "
            f"{'latency ms (p25-p75)':>24s}  speedup (95% interval)")
    lines = [head, "-" * len(head)]
    for _, row in table.iterrows():
        spread = f"{number_text(row.get('latency_ms'), '.3f')} ({number_text(row.get('latency_p25_ms'), '.3f')}-" \
                 f"{number_text(row.get('latency_p75_ms'), '.3f')})"
        lines.append(
            f"{str(row['label']):{label_width}s} {str(row['kind']):10s} {_value(row.get('value'), percent):>{width}s} "
            f"{_value(row.get('drop'), percent):>9s} {int(row['size_bytes']):>11,d} "
            f"{number_text(row.get('compression'), '.2f', 'x'):>11s} {spread:>24s}  {row_speedup_text(row)}"
        )
    return "\n".join(lines)


def file_target(text: str) -> str:
    """A file that can be written: not a folder, in an existing writable folder (checked before the work).

    An existing file is replaced, as pytest's ``--junitxml`` does: these are records of the run.
    """
    from squeezelab.engine.core.errors import ArtifactPathError
    from squeezelab.engine.core.paths import file_to_write

    try:
        file_to_write(text, what="file", overwrite=True, example=None)
    except ArtifactPathError as exc:  # argparse names the option: "argument --json: file 'x' ..."
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def json_target(text: str) -> str:
    """``-`` (stdout) or a file path whose folder exists."""
    return text if text == "-" else file_target(text)


def write_text(target: str, text: str, option: str) -> None:
    """Write ``text`` to the file ``target`` of ``option``; a failure (a full disk) is a one-line ``SqueezeError``."""
    from squeezelab.engine.core.paths import write_failed

    try:
        Path(target).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise write_failed(Path(target), exc, option) from exc


def write_json(target: str, payload: dict[str, Any]) -> None:
    """Write ``payload`` as indented JSON to ``target`` (``-``: stdout)."""
    text = json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n"
    if target == "-":
        sys.stdout.write(text)
    else:
        write_text(target, text, "--json")
