"""Keys for Python code that say what it computes, not where it was written.

The result cache must change its key when a model computes something else. A
module class's source is not always readable (a notebook cell, ``exec``), and
where it is, it can be the wrong text (a class of the same name elsewhere in the
file). So classes and functions are keyed by their code objects: bytecode,
constants, the names they use, recursively through nested code objects (inner
functions, lambdas, comprehensions), their default values and closures, the
helper functions, classes and simple constants of the same module they refer
to, and the class's own simple attributes.

``model_fingerprint`` keys a whole module this way (a module a function captures is keyed by it, and
a module's hooks are functions): the two recurse into each other, so they live in one file.

Keys are stable across processes: line numbers, file names and memory
addresses are left out, and set constants are sorted (their order follows the
per-process string hash). A value that cannot be keyed by content is keyed by
its ``repr``; if that holds a memory address, the key simply never repeats
(a cache miss, never a wrong hit).
"""

from __future__ import annotations

import contextlib
import numbers
import types
from typing import Any

import numpy as np

from squeezelab.engine.core.content_hash import fingerprint

__all__ = ["is_simple", "is_versioned", "value_key", "function_key", "class_key", "model_fingerprint"]

# Classes from these packages are keyed by the package version (in the cache's runtime key), not their code.
_VERSIONED = ("torch", "torch.")
# CPython's flag for a class created at run time (every class a ``class`` statement makes); the classes
# of Python itself (object, int, dict, ...) are static types without it.
_HEAPTYPE = 1 << 9
# What @contextlib.contextmanager returns; CPython's one base class of its sync and async forms.
_GENERATOR_CONTEXT = contextlib._GeneratorContextManagerBase  # type: ignore[attr-defined]


def is_versioned(cls: type) -> bool:
    """True for ``object`` and classes of torch or Python itself (keyed by their versions, not their code).

    A module name alone does not say "Python's own": a class made by ``exec(source, {"torch": torch})``
    has ``__module__ == "builtins"`` (the namespace has no ``__name__``), yet its code is the user's and
    must be keyed, or an edited class would be served the old class's cached figures.
    """
    module = getattr(cls, "__module__", "") or ""
    if cls is object or module == _VERSIONED[0] or module.startswith(_VERSIONED[1]):
        return True
    return module == "builtins" and not getattr(cls, "__flags__", 0) & _HEAPTYPE


def is_simple(value: Any) -> bool:
    """Numbers, strings, bools, None, and tuples/lists/str-keyed dicts of them: cheap to key by content."""
    if value is None or isinstance(value, (str, bytes, numbers.Number)):
        return True
    if isinstance(value, (tuple, list)):
        return all(is_simple(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_simple(v) for k, v in value.items())
    return False


def _const_key(const: Any, seen: set[int]) -> Any:
    if isinstance(const, types.CodeType):
        return _code_key(const, seen)
    if isinstance(const, tuple):
        return ["tuple", [_const_key(c, seen) for c in const]]
    if isinstance(const, frozenset):  # iteration order follows the per-process string hash: sort
        return ["frozenset", sorted(repr(c) for c in const)]
    return repr(const)


def _code_key(code: types.CodeType, seen: set[int]) -> list[Any]:
    return [
        code.co_name,
        code.co_code.hex(),
        [_const_key(c, seen) for c in code.co_consts],
        list(code.co_names),
        list(code.co_varnames),
        list(code.co_freevars),
        code.co_argcount,
        code.co_kwonlyargcount,
        code.co_flags,
    ]


def _names(code: types.CodeType) -> set[str]:
    """Global and attribute names used by ``code`` and the code objects nested in it."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


def value_key(value: Any, seen: set[int] | None = None) -> Any:
    """A key for a value a piece of code depends on (a default, a captured variable, a constant)."""
    import torch  # heavy: loaded on first use (the pytest plugin's modules import this one)

    seen = set() if seen is None else seen
    if is_simple(value):
        return value
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return value  # hashed by content (dtype, shape, bytes) by the cache's fingerprint
    if isinstance(value, (types.FunctionType, types.MethodType)):
        return function_key(value, seen)
    if isinstance(value, torch.nn.Module):
        if id(value) in seen:
            return ["module seen", type(value).__qualname__]
        seen.add(id(value))
        return ["module", model_fingerprint(value)]
    if isinstance(value, _GENERATOR_CONTEXT):  # a @contextmanager used as a decorator (transformers' init guard):
        # its generator function and arguments say what it does; its repr holds an address new in every process
        return ["context manager", function_key(value.func, seen), value_key(list(value.args), seen),
                sorted((k, value_key(v, seen)) for k, v in value.kwds.items())]
    return ["repr", type(value).__qualname__, repr(value)]


def _module_name(module_globals: dict[str, Any]) -> str:
    """The ``__module__`` a class defined in these globals gets: ``exec`` without ``__name__`` gives ``builtins``."""
    return module_globals.get("__name__", "builtins")


def function_key(fn: Any, seen: set[int] | None = None) -> list[Any]:
    """A function's code, defaults, closure values and the same-module helpers and constants it uses."""
    seen = set() if seen is None else seen
    if isinstance(fn, types.MethodType):
        fn = fn.__func__
    code = getattr(fn, "__code__", None)
    name = getattr(fn, "__qualname__", type(fn).__qualname__)
    if code is None:
        return ["callable", name, repr(fn)]
    if id(fn) in seen:  # recursion, or a helper shared by several methods
        return ["seen", name]
    seen.add(id(fn))
    key: list[Any] = [name, _code_key(code, seen)]
    key.append([value_key(v, seen) for v in fn.__defaults__ or ()])
    key.append(sorted((k, value_key(v, seen)) for k, v in (fn.__kwdefaults__ or {}).items()))
    closure = []
    for cell in fn.__closure__ or ():
        try:
            closure.append(value_key(cell.cell_contents, seen))
        except ValueError:  # an empty cell (a variable not assigned yet)
            closure.append("<empty cell>")
    key.append(closure)
    # Helpers and constants from the same module (a notebook's globals): their code and values, by name.
    module_globals = getattr(fn, "__globals__", {})
    used = []
    for global_name in sorted(_names(code)):
        target = module_globals.get(global_name)
        if isinstance(target, types.FunctionType) and target.__globals__ is module_globals:
            used.append((global_name, function_key(target, seen)))
        elif isinstance(target, type) and target.__module__ == _module_name(module_globals) and not is_versioned(target):
            used.append((global_name, class_key(target, seen)))  # a same-module class it builds or calls
        elif is_simple(target) and global_name in module_globals:
            used.append((global_name, target))
    key.append(used)
    return key


def _member_key(value: Any, seen: set[int]) -> Any:
    if isinstance(value, (staticmethod, classmethod)):
        return function_key(value.__func__, seen)
    if isinstance(value, property):
        return [function_key(f, seen) if f is not None else None for f in (value.fget, value.fset, value.fdel)]
    if isinstance(value, types.FunctionType):
        return function_key(value, seen)
    if is_simple(value):
        return value
    return None  # nested classes, descriptors: left out (their effect shows in the code that uses them)


def class_key(cls: type, seen: set[int] | None = None) -> list[Any]:
    """Every class in ``cls``'s MRO that is not torch's or Python's own: methods by code, simple attributes."""
    seen = set() if seen is None else seen
    key: list[Any] = []
    for klass in cls.__mro__:
        if is_versioned(klass):
            continue
        if id(klass) in seen:  # a method that names its own class, or a base met twice
            key.append(["seen", klass.__qualname__])
            continue
        seen.add(id(klass))
        members = []
        for name, value in sorted(vars(klass).items()):
            member = _member_key(value, seen)
            if member is not None:
                members.append((name, member))
        key.append([f"{klass.__module__}.{klass.__qualname__}", members])
    return key


def _module_state(module: Any) -> dict[str, Any]:
    """A module's plain attributes (``self.scale = 2.0``), tensors kept outside parameters/buffers, and hooks."""
    import torch  # heavy: loaded on first use

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
