"""Paths to save to and load from, checked before any work: one set of checks and words for every file.

``Compressed.save``, ``load_packed``, the HTML report and the CLI's ``--output`` / ``--json`` all
take a path from the caller. Without a check, a bad one fails only when the file is finally opened
(after the export, the calibration, the measurement) with a raw ``FileNotFoundError``,
``IsADirectoryError`` or ``PermissionError``. These checks name the path, what is wrong with it and
the fix, in the caller's words (``what`` is ``"--output"`` for the CLI, ``"path"`` for the API), and
raise ``ArtifactPathError`` (a ``ConfigError`` and an ``OSError``).

Whether a folder can be written is asked of the operating system (``os.access``), not probed by
writing: a check must not leave files in the caller's folder. It answers for read-only file systems
too; only permissions the call cannot see (some network file systems) are left to the write itself,
which the writers also turn into ``ArtifactPathError``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from squeezelab.engine.core.errors import ArtifactPathError

__all__ = ["as_path", "file_to_write", "file_to_read", "write_failed"]


def as_path(path: Any, what: str = "path", allowed: str = "a file path (a str or pathlib.Path)") -> Path:
    """``path`` as a ``Path``; anything but a non-empty ``str`` or an ``os.PathLike`` is refused."""
    if (isinstance(path, str) and path) or isinstance(path, os.PathLike):
        return Path(path)
    raise ArtifactPathError(f"{what}={path!r} is not a file path; pass {allowed}.", path=path)


def _file_above(path: Path) -> Path | None:
    """The nearest ancestor of ``path`` that exists, when it is a file (the path lies under a file)."""
    for parent in path.absolute().parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def _not_writable_reason(folder: Path) -> str | None:
    """Why files cannot be created in ``folder`` (an existing folder), or None when they can."""
    if os.access(folder, os.W_OK | os.X_OK):
        return None
    try:
        read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # statvfs is POSIX only
        read_only = False
    return "it is on a read-only file system" if read_only else "you have no permission to write in it"


def file_to_write(
    path: Any,
    *,
    what: str = "path",
    overwrite: bool = False,
    overwrite_fix: str = "pass overwrite=True to replace it",
    create_folders: bool = False,
    example: str | None = "model.onnx",
    beside: Iterable[str] = (),
) -> Path:
    """``path`` as a ``Path`` once it is known that a file can be written there, or ``ArtifactPathError``.

    Args:
        path: the file to write.
        what: how messages name the path (``"path"``, ``"--output"``, ``"report path"``).
        overwrite: an existing file may be replaced; otherwise it is refused with ``overwrite_fix``.
        create_folders: missing folders will be created (then the nearest existing one must be writable).
        example: a file name the "is a folder" message suggests inside the folder (None: no example).
        beside: suffixes of files written next to ``path`` (``".json"``), checked the same way.
    """
    path = as_path(path, what)
    shown = repr(str(path))
    targets = [path, *(path.with_name(path.name + suffix) for suffix in beside)]
    for target in targets:
        if target.is_dir():
            such = f", e.g. {str(target / example)!r}" if example else ""
            raise ArtifactPathError(f"{what} {str(target)!r} is a folder; give a file name in it{such}.", path=path)
    above = _file_above(path)
    if above is not None:
        raise ArtifactPathError(
            f"{what} {shown} cannot be written: {str(above)!r} is a file, not a folder; choose a path in a folder.",
            path=path,
        )
    folder = path.absolute().parent
    if not folder.is_dir():
        if not create_folders:
            raise ArtifactPathError(
                f"the folder of {what} {shown} does not exist; create {str(folder)!r} first, or choose an existing folder.",
                path=path,
            )
        folder = next(p for p in folder.parents if p.exists())  # where the missing folders would be made
    reason = _not_writable_reason(folder)
    if reason is not None:
        raise ArtifactPathError(
            f"{what} {shown} cannot be written: {reason} ({str(folder)!r}); choose a writable folder.", path=path
        )
    for target in targets:
        if not target.exists():
            continue
        if not overwrite:
            raise ArtifactPathError(f"{what} {str(target)!r} exists; {overwrite_fix}.", path=path)
        if not os.access(target, os.W_OK):
            raise ArtifactPathError(
                f"{what} {str(target)!r} exists and is read-only, so it cannot be replaced; choose another path "
                "or make it writable.",
                path=path,
            )
    return path


def file_to_read(path: Any, *, what: str = "path", wrote_by: str = "", allowed: str | None = None) -> Path:
    """``path`` as a ``Path`` once it is known to be a readable file, or ``ArtifactPathError``.

    ``wrote_by`` completes the fix, e.g. ``" (the file Compressed.save wrote)"``; ``allowed`` says what
    else than a path the caller takes, for a value that is no path.
    """
    path = as_path(path, what, *([allowed] if allowed else []))
    shown = repr(str(path))
    if path.is_dir():
        raise ArtifactPathError(f"{what} {shown} is a folder; pass the file in it{wrote_by}.", path=path)
    if not path.exists():
        above = _file_above(path)
        where = (
            f"{str(above)!r} is a file, not a folder" if above is not None else f"no such file in {str(path.absolute().parent)!r}"
        )
        raise ArtifactPathError(f"{what} {shown} not found: {where}; pass the path of an existing file{wrote_by}.", path=path)
    if not os.access(path, os.R_OK):
        raise ArtifactPathError(f"{what} {shown} cannot be read: you have no permission to read it.", path=path)
    return path


def write_failed(path: Path, exc: OSError, what: str = "path") -> ArtifactPathError:
    """The ``ArtifactPathError`` for a write that failed anyway (a full disk, a folder changed meanwhile)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return ArtifactPathError(
        f"cannot write {what} {str(path)!r}: {reason}; free some space or choose another path.", path=path
    )
