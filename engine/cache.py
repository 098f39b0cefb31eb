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
  naming it (``check_writable`` probes it before any work starts).

Entries are independent, which is what makes an interrupted sweep resumable:
every point finished before the interruption is already on disk.
"""

from __future__ import annotations

import functools
import hashlib
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
from squeezelab.engine._code_key import class_key, function_key, is_simple, value_key
from squeezelab.engine.errors import CacheError, ConfigError

__all__ = [
    "ResultCache",
    "fingerprint",
    "model_fingerprint",
    "data_fingerprint",
    "callable_fingerprint",
    "runtime_fingerprint",
    "default_cache_dir",
]

_FORMAT = 3  # 2: rows carry speedup_low / speedup_high. Bump when the entry layout changes: old entries then simply miss


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
    elif isinstance(value, (bytes, bytearray)):  # an ONNX model: its bytes, not their repr (90 MB for MiniLM)
        h.update(f"bytes{len(value)}".encode())
        h.update(value)
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


def _module_state(module: Any) -> dict[str, Any]:
    """A module's plain attributes (``self.scale = 2.0``), tensors kept outside parameters/buffers, and hooks."""
    import torch

    state: dict[str, Any] = {}
    for attr, value in vars(module).items():
        if is_simple(value) or isinstance(value, torch.Tensor):
            state[attr] = value
    for kind in ("_forward_pre_hooks", "_forward_hooks"):  # hooks change what forward returns
        hooks = getattr(module, kind, None) or {}
        if hooks:
            state[kind] = [value_key(hook) for hook in hooks.values()]
    return state


def model_fingerprint(model: Any) -> str:
    """What a model computes: everything its figures could depend on that can be read cheaply.

    Covered: parameters and persistent buffers (``state_dict``), non-persistent buffers,
    the module tree (``repr``), each module's plain attributes (numbers, strings, bools,
    tuples, lists and str-keyed dicts of them; tensors stored as attributes) and forward hooks, and, for every class
    in each module's MRO that is not torch's, its code (bytecode, constants, names, nested
    code, defaults, closures, same-module helpers and constants) and simple class
    attributes (torch's classes are keyed by torch's version). Source text is not read: it
    is missing for notebook and ``exec`` classes, and parsing a large module's source took
    ~0.5 s per fingerprint.
    """
    classes = {type(m) for m in model.modules()}
    # Two classes may share a qualified name (two notebook cells, two exec calls): key each class object.
    codes = sorted(fingerprint(f"{cls.__module__}.{cls.__qualname__}", class_key(cls)) for cls in classes)
    state = dict(model.state_dict())
    hidden = {name: b for name, b in model.named_buffers() if name not in state}  # persistent=False
    attributes = {name: _module_state(m) for name, m in model.named_modules()}
    return fingerprint(repr(model), codes, state, hidden, attributes)


def callable_fingerprint(fn: Any) -> str:
    """A key for a metric function that is stable across processes: its name and its code.

    Functions (lambdas included) are keyed by bytecode, constants, defaults, the
    values their closures capture and the same-module helpers they call, so two
    lambdas computing different things never share a key. Other callables are keyed
    by their class's code and their ``repr`` (an object whose ``repr`` holds a memory
    address then simply never hits the cache).
    """
    target = fn.func if isinstance(fn, functools.partial) else fn
    parts: list[Any] = [getattr(target, "__module__", ""), getattr(target, "__qualname__", type(target).__name__)]
    if getattr(target, "__code__", None) is not None:
        parts.append(function_key(target))
    else:
        parts += [repr(target), class_key(type(target))]
    if isinstance(fn, functools.partial):
        parts += [[value_key(a) for a in fn.args], sorted((k, value_key(v)) for k, v in fn.keywords.items())]
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
    """Content hash of evaluation data (any form ``engine.samples`` reads): input names, dtypes, shapes and bytes, and the targets."""
    if data is None:
        return fingerprint(None)
    from squeezelab.engine.samples import read_samples

    samples = read_samples(data)
    h = hashlib.sha256(b"samples")
    _feed(h, [samples.inputs.kind, list(samples.inputs.names)])
    for array in samples.inputs.arrays:
        _feed(h, array)
    _feed(h, samples.targets if samples.targets is not None else "no targets")
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
