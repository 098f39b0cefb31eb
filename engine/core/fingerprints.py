"""Fingerprints: content keys of models, data, metric functions and the runtime they were measured with.

A key is a SHA-256 over what a figure could depend on (see ``model_fingerprint``: weights, every
buffer, the module tree, plain attributes, hooks and the code of every class), so the result cache
(``explore.cache``) and ``Settings`` can tell two models, data sets or metrics apart without names.
"""

from __future__ import annotations

import functools
import hashlib
import os
from importlib import metadata
from typing import Any

from squeezelab.engine.core.code_key import class_key, function_key, model_fingerprint, value_key
from squeezelab.engine.core.content_hash import FORMAT, feed, fingerprint
from squeezelab.engine.core.cpu import cpu_name
from squeezelab.engine.core.samples import read_samples

__all__ = ["fingerprint", "model_fingerprint", "data_fingerprint", "callable_fingerprint", "runtime_fingerprint", "FORMAT"]


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
    samples = read_samples(data)
    h = hashlib.sha256(b"samples")
    feed(h, [samples.inputs.kind, list(samples.inputs.names)])
    for array in samples.inputs.arrays:
        feed(h, array)
    feed(h, samples.targets if samples.targets is not None else "no targets")
    return h.hexdigest()
