"""The tables a benchmark prints, also written as Markdown for the documentation site (``--markdown PATH``).

A benchmark prints its tables as it always has and records each line it prints through ``Page.line``;
``Page.write`` then saves them under a header that says where and when they were measured (CPU, its
int8-relevant flags, the date, the versions, the load average, the command). The site includes the saved
file (``--8<--`` in ``docs/benchmarks.md``), so the figures on the site are the ones a run printed, never
copied by hand: rerun the command in the header to refresh them.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shlex
import sys
from pathlib import Path

from _machine import load_average
from squeezelab.engine.core.cpu import cpu_flags
from squeezelab.engine.runtime.environment import environment

RESULTS = Path(__file__).resolve().parent / "results"  # what docs/benchmarks.md includes


def add_markdown_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--markdown", metavar="PATH", type=Path, default=None,
                        help=f"also write the tables as Markdown (the site includes {RESULTS.name}/<benchmark>.md)")


class Page:
    """The lines of one benchmark run's tables, printed as they come and kept for ``write``."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.load_at_start = load_average()
        repo = str(RESULTS.parents[1]) + os.sep  # paths inside the checkout are shown from its root
        self.command = " ".join(shlex.quote(a.removeprefix(repo)) for a in ["benchmarks/" + Path(sys.argv[0]).name, *sys.argv[1:]])

    def line(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)

    def header(self) -> str:
        env = environment()
        int8_flags = sorted(f for f in cpu_flags() if f in {"avx2", "avx512f", "avx512bw"} or "vnni" in f or f.startswith("amx"))
        kind = "AVX-512 VNNI" if env["vnni"] else "AVX2 only" if env["avx2"] else "neither AVX2 nor VNNI"
        return (f"Measured on {datetime.date.today().isoformat()}: {env['cpu']} ({env['cores']} cores, **{kind}**; "
                f"flags {' '.join(int8_flags)}), onnxruntime {env['onnxruntime']}, torch {env['torch']}; load average "
                f"{self.load_at_start} at the start, {load_average()} at the end. Written by `{self.command}`.")

    def write(self, path: Path | None) -> None:
        if path is None:
            return
        # The site writes ratios as the rest of the docs do (1.11×); the terminal keeps ASCII.
        body = re.sub(r"(\d)x\b", "\\1×", "\n".join(self.lines).strip("\n"))
        marker = f"<!-- written by {self.command}; rerun it to refresh, do not edit by hand -->"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{marker}\n{self.header()}\n\n{body}\n")
        print(f"wrote {path}")
