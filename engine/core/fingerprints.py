"""Fingerprints: content keys of models, data, metric functions and the runtime they were measured with.

A key is a SHA-256 over what a figure could depend on (see ``model_fingerprint``: weights, every
buffer, the module tree, plain attributes, hooks and the code of every class), so the result cache
(``explore.cache``) and ``Settings`` can tell two models, data sets or metrics apart without names.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from typing import Any

import numpy as np

from squeezelab._version import __version__
from squeezelab.engine.core.code_key import class_key, function_key, is_simple, value_key

__all__ = ["fingerprint", "model_fingerprint", "data_fingerprint", "callable_fingerprint", "runtime_fingerprint", "FORMAT"]

FORMAT = 3  # 2: rows carry speedup_low / speedup_high. Bump when the entry layout changes: old cache entries then simply miss


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
    h = hashlib.sha256(f"squeezelab {__version__} cache {FORMAT}".encode())
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

    from squeezelab.engine.core.cpu import cpu_name

    versions = []
    for package in ("torch", "onnx", "onnxruntime", "numpy", "scikit-learn"):
        try:
            versions.append((package, metadata.version(package)))
        except metadata.PackageNotFoundError:
            versions.append((package, None))
    return fingerprint(versions, cpu_name(), os.cpu_count())


def data_fingerprint(data: Any) -> str:
    """Content hash of evaluation data (any form ``engine.samples`` reads): input names, dtypes, shapes and bytes, and the targets."""
    if data is None:
        return fingerprint(None)
    from squeezelab.engine.core.samples import read_samples

    samples = read_samples(data)
    h = hashlib.sha256(b"samples")
    _feed(h, [samples.inputs.kind, list(samples.inputs.names)])
    for array in samples.inputs.arrays:
        _feed(h, array)
    _feed(h, samples.targets if samples.targets is not None else "no targets")
    return h.hexdigest()
