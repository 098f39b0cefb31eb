"""MkDocs hook: lets mkdocstrings read ``squeezelab.engine`` (and ``.checks``, ``.widgets``) where they live.

The package maps three folders into ``squeezelab`` (pyproject.toml's ``package-dir``), and griffe, which
reads the sources without importing them, only searches folders laid out as the import names are. So
before the build this hook lays out such a folder (``squeezelab/`` with ``engine``, ``checks`` and
``widgets`` inside it, each source file a symbolic link) in a temporary directory, and points the Python
handler at it. Nothing is copied and nothing is imported: building the site loads no torch.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from mkdocs.plugins import event_priority

ROOT = Path(__file__).resolve().parents[1]
MAPPED = {"engine": "engine", "checks": "checks", "widgets": "widgets"}  # squeezelab.<name> -> folder
_TREE = tempfile.TemporaryDirectory(prefix="squeezelab-api-")  # removed when the build's process ends


def _lay_out(tree: Path) -> None:
    # Folders are made, files linked: griffe names a module after its folder's resolved path, so a
    # linked folder would read as the top-level package ``engine``.
    sources = {"": ROOT / "squeezelab", **{name: ROOT / folder for name, folder in MAPPED.items()}}
    for inside, folder in sources.items():
        for source in folder.rglob("*.py"):
            link = tree / "squeezelab" / inside / source.relative_to(folder)
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.is_symlink():
                link.symlink_to(source)


@event_priority(100)  # before mkdocstrings reads its handlers' settings
def on_config(config: Any) -> Any:
    tree = Path(_TREE.name)
    _lay_out(tree)
    handlers = config.plugins["mkdocstrings"].config.handlers
    handlers.setdefault("python", {})["paths"] = [str(tree)]
    return config
