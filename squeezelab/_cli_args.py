"""Argument checking for the ``squeezelab`` command: every value is checked before any work starts.

A bad argument ends the command with one line on stderr (``squeezelab demo: error: ...``) and exit
status 2, never a traceback and never after minutes of work. Each parser here is an argparse ``type=``:
it raises ``argparse.ArgumentTypeError`` with a message that says what was given and what is allowed.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from collections.abc import Callable
from typing import NoReturn, TypeVar

__all__ = ["OneLineParser", "checked", "positive_int", "timing", "port_number", "batch_sizes", "output_folder", "fail", "cli_words", "CLI_WORDS"]


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line on stderr and exit status 2.

    argparse prints the whole usage block before the error; in a CI log the one line that says what
    was wrong is what a reader needs (``--help`` still shows the usage).
    """

    def error(self, message: str) -> NoReturn:
        fail(self.prog, message)


T = TypeVar("T")

# The engine's errors name the API's arguments (overwrite=True, calibration_data=); a CLI user knows the
# options. Each entry is an API phrase that an engine error can bring to the CLI, and the same fix in the
# CLI's words; cli_words applies them where the CLI prints an engine error (tests/test_cli.py tries each).
CLI_WORDS: tuple[tuple[str, str], ...] = (
    (r"pass overwrite=True", "pass --overwrite"),
    (r"\breport path '", "--output '"),
    (r"--compress-budget=PATH", "--budget PATH"),
    (r"(?<![\w-])calibration_data=", "--calibration CAL.npz"),
    (r"\(cache='/a/writable/folder', or set \$SQUEEZELAB_CACHE\), or cache=False",
     "(--cache FOLDER, or set $SQUEEZELAB_CACHE), or --no-cache"),
    (r"pass a folder \(or cache=None\)", "pass --cache FOLDER (or --no-cache)"),
    (r"(?<![\w-])cache='", "--cache '"),
    (r"runtime=Int8Dynamic\(\)", "--recipe int8-dynamic"),
    (r"runtime=Int8Static\(\)", "--recipe int8-static"),
    (r"(?<![\w-])output=", "--output-key "),
)


def cli_words(message: str) -> str:
    """``message`` with the API's argument names (``CLI_WORDS``) replaced by the CLI's options."""
    for api, cli in CLI_WORDS:
        message = re.sub(api, cli, message)
    return message


def fail(prog: str, message: str) -> NoReturn:
    """Print ``PROG: error: MESSAGE`` (one line) and exit with status 2."""
    one_line = " ".join(str(message).split())
    print(f"{prog}: error: {one_line}", file=sys.stderr)
    raise SystemExit(2)


def checked(text: str, convert: Callable[[str], T], allowed: Callable[[T], bool], *, unreadable: str, refused: str) -> T:
    """``convert(text)``, refused unless ``allowed(value)``: the shape of every argument check here.

    ``unreadable`` (when ``convert`` raises ``ValueError``) and ``refused`` are the one-line messages,
    formatted with ``{text}`` (the argument, quoted) and ``{value}`` (what it converted to).
    """
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(unreadable.format(text=repr(text))) from None
    if not allowed(value):
        raise argparse.ArgumentTypeError(refused.format(text=repr(text), value=value))
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (rounds, threads)."""
    return checked(text, int, lambda v: v >= 1, unreadable="{text} is not an integer; pass a whole number >= 1",
                   refused="{value} is not allowed; pass a whole number >= 1")


def timing(args: argparse.Namespace) -> dict[str, int]:
    """The timing options given on the command line (``--rounds``, ``--batch-size``, ``--threads``) as keyword
    overrides of ``Settings``; one left out is not passed, so the API's default applies (``Settings`` for
    ``compress`` and ``demo``, ``Settings.for_sweeps()`` for ``sweep``): the CLI keeps no defaults of its own."""
    return {name: value for name in ("rounds", "batch_size", "threads") if (value := getattr(args, name, None)) is not None}


def port_number(text: str) -> int:
    """A TCP port, 1-65535."""
    return checked(text, int, lambda v: 1 <= v <= 65535, unreadable="{text} is not a port number; pass 1-65535",
                   refused="{value} is not a port number; pass 1-65535")


def batch_sizes(text: str) -> list[int]:
    """Comma-separated positive integers, e.g. ``1,256``."""
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of batch sizes; pass e.g. 1,256")
    out = []
    for part in parts:
        try:
            value = int(part)
        except ValueError:
            where = "" if part == text.strip() else f" in {text!r}"
            raise argparse.ArgumentTypeError(
                f"{part!r}{where} is not an integer; pass comma-separated whole numbers >= 1, e.g. 1,256"
            ) from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"batch size {value} in {text!r} is not allowed; each must be >= 1")
        out.append(value)
    if len(set(out)) != len(out):
        raise argparse.ArgumentTypeError(f"{text!r} repeats a batch size; list each once")
    return out


def output_folder(text: str) -> Path:
    """A folder that exists or can be created, and is writable (checked now, not after the work)."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file, not a folder; pass a folder path")
    probe = path
    while not probe.exists():  # the nearest existing ancestor decides whether it can be created
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not (probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)):
        what = "a file" if not probe.is_dir() else "not writable"
        raise argparse.ArgumentTypeError(f"{text!r} cannot be written: {str(probe)!r} is {what}; pass another folder")
    return path
