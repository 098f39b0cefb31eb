"""An on-disk cache of measured results, keyed by what they were measured from.

A key is a SHA-256 over the model (see ``model_fingerprint``: weights, all
buffers, module tree, plain attributes, the code of its classes), the data,
the recipe, the measurement settings, the metric's code, the versions of
squeezelab, torch, onnx and onnxruntime, and the CPU: change any of these and
the key changes. What it cannot see (state outside the model that forward
reads: objects held in attributes other than tensors and plain values, other
modules' functions and globals; library code edited without a version change)
is the caller's to invalidate: use another cache folder, or ``cache=False``.
Each entry is one small JSON file holding its own key and a checksum of its
payload:

- writes are atomic (a temporary file in the same folder, then ``os.replace``),
  so a process killed mid-write leaves either the old entry or none;
- a truncated, hand-edited or otherwise corrupt entry fails its checksum, is
  reported once (a warning naming the file), deleted and recomputed;
- a folder that cannot be created, written or read raises ``CacheError``
  naming it (``check_writable`` probes it before any work starts);
- temporary files a killed process left behind (``.tmp-*.json``, ``.tmp-probe-*``)
  are removed when the cache is opened for work (``check_writable``), once
  they are older than ``ORPHAN_AGE_S``: a write takes milliseconds, so an
  older temporary file belongs to no live writer, and a younger one may.

Entries are independent, which is what makes an interrupted sweep resumable:
every point finished before the interruption is already on disk.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any


from squeezelab.engine.core.errors import CacheError, ConfigError

__all__ = ["ResultCache", "default_cache_dir", "ORPHAN_AGE_S"]

# A temporary file older than this belongs to no live writer (an entry is written and renamed in
# milliseconds); only such files are removed, never one another process may be writing now.
ORPHAN_AGE_S = 600.0
_TEMPORARY = (".tmp-probe-*", "??/.tmp-*.json")

def default_cache_dir() -> Path:
    """``$SQUEEZELAB_CACHE``, else ``$XDG_CACHE_HOME/squeezelab``, else ``~/.cache/squeezelab``."""
    if os.environ.get("SQUEEZELAB_CACHE"):
        return Path(os.environ["SQUEEZELAB_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "squeezelab"


class ResultCache:
    """JSON payloads on disk under ``root``, one file per key (``root/ab/abcdef....json``).

    ``ResultCache(None)`` is a cache that stores nothing (every lookup misses).
    ``hits`` and ``misses`` count lookups, so callers can show and tests can
    assert that nothing was recomputed.
    """

    def __init__(self, root: str | os.PathLike[str] | None) -> None:
        self.root = None if root is None else Path(root)
        self.hits = 0
        self.misses = 0
        self.recovered: list[Path] = []
        self._writable = False
        if self.root is not None:
            if self.root.exists() and not self.root.is_dir():
                raise ConfigError(f"cache={str(self.root)!r} is a file; pass a folder (or cache=None).")

    def _error(self, action: str, path: Path, exc: OSError) -> CacheError:
        reason = exc.strerror or str(exc) or type(exc).__name__
        return CacheError(
            f"cannot {action} the result cache at {str(path)!r}: {reason}. Pass another folder "
            "(cache='/a/writable/folder', or set $SQUEEZELAB_CACHE), or cache=False to measure "
            "without caching.",
            path=path,
        )

    def check_writable(self) -> None:
        """Create the folder and write a small probe file in it: ``CacheError`` now rather than mid-sweep.

        Cheap (one tiny file written and removed) and done once per cache object.
        """
        if self.root is None or self._writable:
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-probe-")
            try:
                os.write(fd, b"squeezelab cache probe\n")  # a full disk fails here, not only on open
            finally:
                os.close(fd)
                os.unlink(tmp)
        except OSError as exc:
            raise self._error("write to", self.root, exc) from exc
        self._writable = True
        self.remove_orphans()

    def remove_orphans(self, older_than_s: float = ORPHAN_AGE_S) -> list[Path]:
        """Remove temporary files left by writers that were killed (older than ``older_than_s``); returns them."""
        if self.root is None or not self.root.is_dir():
            return []
        cutoff = time.time() - older_than_s
        removed = []
        for pattern in _TEMPORARY:
            for path in self.root.glob(pattern):
                try:
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed.append(path)
                except OSError:  # removed meanwhile by another process, or not ours to remove: leave it
                    continue
        return removed

    @classmethod
    def of(cls, cache: Any) -> ResultCache:
        """Normalise a ``cache=`` argument: True (default folder), False/None (off), a path, or a cache."""
        if isinstance(cache, ResultCache):
            return cache
        if cache is True:
            return cls(default_cache_dir())
        if cache is False or cache is None:
            return cls(None)
        if isinstance(cache, (str, os.PathLike)):
            return cls(cache)
        raise ConfigError(f"cache={cache!r}; pass True (default folder), False, a folder path or a ResultCache.")

    def path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> Any | None:
        """The payload stored under ``key``, or None (a miss). A corrupt entry is removed and misses."""
        if self.root is None:
            self.misses += 1
            return None
        path = self.path(key)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            self.misses += 1
            return None
        except OSError as exc:  # unreadable (permissions, an I/O error): say which file, not a raw traceback
            raise self._error("read", path, exc) from exc
        payload = self._check(path, key, raw)
        if payload is None:
            self.misses += 1
            return None
        self.hits += 1
        return payload

    def _check(self, path: Path, key: str, raw: bytes) -> Any | None:
        try:
            entry = json.loads(raw.decode("utf-8"))
            body = json.dumps(entry["payload"], sort_keys=True)
            ok = entry["key"] == key and entry["sha256"] == hashlib.sha256(body.encode()).hexdigest()
        except (ValueError, KeyError, TypeError):  # UnicodeDecodeError is a ValueError
            ok = False
        if ok:
            return entry["payload"]
        warnings.warn(
            f"squeezelab cache entry {path} is corrupt (bad JSON or checksum); it is removed and the "
            "result recomputed.",
            RuntimeWarning,
            stacklevel=3,
        )
        self.recovered.append(path)
        path.unlink(missing_ok=True)
        return None

    def put(self, key: str, payload: Any) -> None:
        """Store ``payload`` (plain JSON data) under ``key``, atomically; ``CacheError`` if it cannot."""
        if self.root is None:
            return
        body = json.dumps(payload, sort_keys=True)
        entry = {"key": key, "sha256": hashlib.sha256(body.encode()).hexdigest(), "payload": json.loads(body)}
        path = self.path(key)
        try:
            self._write(path, entry)
        except OSError as exc:  # a full disk, a folder made read-only meanwhile
            raise self._error("write to", path, exc) from exc

    @staticmethod
    def _write(path: Path, entry: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        try:
            with io.open(fd, "w") as f:
                json.dump(entry, f, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)  # atomic on POSIX and Windows: readers see all or nothing
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def keys(self) -> Iterable[str]:
        """Keys of the entries on disk (temporary files of unfinished writes excluded)."""
        if self.root is None or not self.root.exists():
            return []
        return sorted(p.stem for p in self.root.glob("??/*.json") if not p.name.startswith(".tmp-"))

    def __len__(self) -> int:
        return len(list(self.keys()))

    def __repr__(self) -> str:
        where = "off" if self.root is None else str(self.root)
        return f"ResultCache({where}, hits={self.hits}, misses={self.misses})"
