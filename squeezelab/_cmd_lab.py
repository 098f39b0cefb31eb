"""``squeezelab lab``: copy the explorer notebook into a working folder (never over a copy) and open JupyterLab."""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["notebooks_dir", "run_lab"]


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
