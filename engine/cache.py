"""An on-disk cache of measured results, keyed by what they were measured from.

A key is a SHA-256 over the model (weights, buffers, module tree, the source
of its class), the data, the recipe, the measurement settings, the metric's
code, the versions of squeezelab, torch, onnx and onnxruntime, and the CPU:
change any of these and the key changes. What it cannot see (a model
changed through plain attributes its ``repr`` does not show, code edited
without a version change) is the caller's to invalidate: use another cache
folder, or ``cache=False``. Each entry is one small JSON file holding its own
key and a checksum of its payload:

- writes are atomic (a temporary file in the same folder, then ``os.replace``),
  so a process killed mid-write leaves either the old entry or none;
- a truncated, hand-edited or otherwise corrupt entry fails its checksum, is
  reported once (a warning naming the file), deleted and recomputed.

Entries are independent, which is what makes an interrupted sweep resumable:
every point finished before the interruption is already on disk.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import io
import json
import os
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from squeezelab._version import __version__
from squeezelab.engine.errors import ConfigError

__all__ = [
    "ResultCache",
    "fingerprint",
    "model_fingerprint",
    "data_fingerprint",
    "callable_fingerprint",
    "runtime_fingerprint",
    "default_cache_dir",
]

_FORMAT = 2  # 2: rows carry speedup_low / speedup_high. Bump when the entry layout changes: old entries then simply miss


def default_cache_dir() -> Path:
    """``$SQUEEZELAB_CACHE``, else ``$XDG_CACHE_HOME/squeezelab``, else ``~/.cache/squeezelab``."""
    if os.environ.get("SQUEEZELAB_CACHE"):
        return Path(os.environ["SQUEEZELAB_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "squeezelab"


def _feed(h: Any, value: Any) -> None:
    """Hash ``value`` by content: arrays and tensors by dtype, shape and bytes; the rest as JSON."""
    import torch

    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f"tensor{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())  # raw bytes: bfloat16 has no numpy dtype
        return
    if isinstance(value, np.ndarray):
        h.update(f"nd{value.dtype.str}{value.shape}".encode())
        h.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, (list, tuple)):
        h.update(f"seq{len(value)}[".encode())
        for item in value:
            _feed(h, item)
        h.update(b"]")
    elif isinstance(value, dict):
        h.update(b"{")
        for k in sorted(value, key=str):
            h.update(json.dumps(str(k)).encode())
            _feed(h, value[k])
        h.update(b"}")
    else:
        h.update(json.dumps(value, sort_keys=True, default=repr).encode())


def fingerprint(*parts: Any) -> str:
    """A hex SHA-256 over ``parts`` (arrays by content) and the squeezelab version."""
    h = hashlib.sha256(f"squeezelab {__version__} cache {_FORMAT}".encode())
    for part in parts:
        _feed(h, part)
    return h.hexdigest()


def _source(obj: Any) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):  # built in, or defined where no source is kept
        return ""


def model_fingerprint(model: Any) -> str:
    """Weights, buffers, the module tree (``repr``) and the source of every module class in it."""
    classes = sorted({f"{type(m).__module__}.{type(m).__qualname__}": type(m) for m in model.modules()}.items())
    sources = [(name, _source(cls)) for name, cls in classes]
    return fingerprint(repr(model), sources, dict(model.state_dict()))


def callable_fingerprint(fn: Any) -> str:
    """A key for a metric function that is stable across processes: its name and its code.

    Functions (lambdas included) are keyed by bytecode, constants, defaults and
    the values their closures capture, so two lambdas computing different things
    never share a key. Other callables are keyed by their ``repr`` (an object whose
    ``repr`` holds a memory address then simply never hits the cache).
    """
    target = fn.func if isinstance(fn, functools.partial) else fn
    code = getattr(target, "__code__", None)
    parts: list[Any] = [getattr(target, "__module__", ""), getattr(target, "__qualname__", type(target).__name__)]
    if code is not None:
        closure = [repr(c.cell_contents) for c in (target.__closure__ or ())]
        parts += [code.co_code.hex(), repr(code.co_consts), repr(target.__defaults__), closure]
    else:
        parts.append(repr(target))
    if isinstance(fn, functools.partial):
        parts += [repr(fn.args), repr(sorted(fn.keywords.items()))]
    return fingerprint(*parts)


def runtime_fingerprint() -> str:
    """Versions of the libraries that compute the figures, and the CPU they were measured on."""
    from importlib import metadata

    from squeezelab.engine.environment import _cpu_name

    versions = []
    for package in ("torch", "onnx", "onnxruntime", "numpy", "scikit-learn"):
        try:
            versions.append((package, metadata.version(package)))
        except metadata.PackageNotFoundError:
            versions.append((package, None))
    return fingerprint(versions, _cpu_name(), os.cpu_count())


def data_fingerprint(data: Any) -> str:
    """Content hash of ``(x, y)`` arrays, a Dataset or a DataLoader (every batch is read once)."""
    if data is None:
        return fingerprint(None)
    from squeezelab.engine.data import iter_batches

    h = hashlib.sha256(b"data")
    for x, y in iter_batches(data, 4096):
        _feed(h, x)
        _feed(h, y)
    return h.hexdigest()


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
        if self.root is not None:
            if self.root.exists() and not self.root.is_dir():
                raise ConfigError(f"cache={str(self.root)!r} is a file; pass a folder (or cache=None).")

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
        """Store ``payload`` (plain JSON data) under ``key``, atomically."""
        if self.root is None:
            return
        body = json.dumps(payload, sort_keys=True)
        entry = {"key": key, "sha256": hashlib.sha256(body.encode()).hexdigest(), "payload": json.loads(body)}
        path = self.path(key)
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
