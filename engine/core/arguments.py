"""Argument checks shared by ``sweep``, ``layer_sensitivity``, ``search``, ``Sweep.best`` and the explorer.

One helper per kind of argument, so every entry point accepts and refuses the
same values with the same words, before any work starts:

- **Bit widths and sparsities** (``bits=``, ``sparsity=``): one value or a list
  of them (``bits=4`` means ``[4]``). Widths are integers (not bools, strings or
  floats); sparsities are finite fractions in [0, 1).
- **Empty lists**: refused wherever they would silently drop the values of the
  other list or leave nothing but the baseline to measure. ``sweep`` measures
  bits × sparsity, so both must hold values, or both be empty when ``recipes=``
  supplies the points; ``layer_sensitivity`` probes each list on its own, so one
  may be empty (that axis is not probed) but not both; ``search`` picks a value
  per layer from each list, so neither may be empty.
- **Budgets and limits** (``max_accuracy_drop``, ``time_budget_s``, ...): finite
  numbers in a stated range. NaN compares false with everything, so a NaN budget
  would silently accept or refuse every point; inf is no budget at all.
- **Executors**: a ``concurrent.futures.Executor`` instance that still accepts work.
- **Numbers** (``as_integer``, ``as_real``, used by every config too): numpy scalars and 0-d arrays
  count as the Python numbers they hold (``np.int64(4)`` is 4) and come back as plain ``int`` /
  ``float``, so a config holding one hashes, compares and serialises like one built from ``4``.
  Where an integer is meant, a float is refused, ``4.0`` included: a count or width given as a
  float is usually a computed value that was not meant to be rounded here. Bools are refused as
  numbers (``True`` is not a width).
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

from squeezelab.engine.core.errors import ConfigError

__all__ = [
    "WIDTHS",
    "width",
    "fraction",
    "scalar",
    "as_integer",
    "as_real",
    "grid_lists",
    "finite_number",
    "count",
    "check_executor",
]

WIDTHS = "an integer 1..16 (the quantizer narrows this: linear 2..16, k-means 1..8), or 32 for float weights"
_FRACTIONS = "a number in [0, 1) (0.9 = 90% pruned)"


def _item_of(name: str, passed: Any) -> str:
    return "" if passed is None else f" (it is an item of {name}={passed!r})"


def scalar(value: Any) -> Any:
    """A 0-d numpy array, numpy scalar or 0-d tensor as its Python number; anything else as it is."""
    return value.item() if getattr(value, "ndim", None) == 0 and hasattr(value, "item") else value


def as_integer(value: Any) -> int | None:
    """``value`` as a plain ``int`` when it is an integer (Python or numpy, a 0-d array of one), else None.

    None for bools, floats (``4.0`` too), strings and anything else: the caller refuses it in its own words.
    """
    value = scalar(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return None
    return int(value)


def as_real(value: Any) -> float | None:
    """``value`` as a plain ``float`` when it is a real number (int, float, numpy, a 0-d array), else None (bools too)."""
    value = scalar(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def width(value: Any, *, passed: Any = None, name: str = "bits") -> int:
    """One weight width as a plain ``int``; ``passed`` is the whole argument, for the message."""
    number = as_integer(value)
    if number is None or not (1 <= number <= 16 or number == 32):
        raise ConfigError(
            f"{name}={value!r} is not allowed: each width must be {WIDTHS}{_item_of(name, passed)}; "
            f"e.g. {name}=[8, 4, 2] or {name}=4."
        )
    return number


def fraction(value: Any, *, passed: Any = None, name: str = "sparsity") -> float:
    """One sparsity as a plain ``float`` in [0, 1)."""
    number = as_real(value)
    if number is None or not 0 <= number < 1:
        raise ConfigError(
            f"{name}={value!r} must be {_FRACTIONS}{_item_of(name, passed)}; e.g. {name}=[0.0, 0.5] or {name}=0.5."
        )
    return number


def _values(name: str, values: Any, one: Any) -> tuple:
    """``values`` as a tuple of checked items: one number becomes a list of one."""
    if values is None or isinstance(values, (str, bytes, Mapping)):
        allowed = f"widths, each {WIDTHS}, e.g. {name}=[8, 4, 2] or {name}=4" if one is width else f"sparsities, each {_FRACTIONS}, e.g. {name}=[0.0, 0.5] or {name}=0.5"
        raise ConfigError(f"{name}={values!r} is not a number or a list of numbers; {name} takes {allowed}.")
    values = scalar(values)
    if isinstance(values, numbers.Number) or not isinstance(values, Iterable):
        return (one(values, name=name),)  # one value means a list of one (or is refused as one value)
    items = [scalar(v) for v in values]
    return tuple(one(v, passed=items, name=name) for v in items)


def grid_lists(bits: Any, sparsity: Any, *, layout: str, recipes: bool = False) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Check and normalise ``bits`` and ``sparsity`` (see the module docstring for the rule on empty lists).

    Args:
        bits, sparsity: one value or a list each, as the caller passed them.
        layout: ``"product"`` (sweep's grid), ``"separate"`` (sensitivity's axes) or
            ``"each"`` (search's per-layer choices).
        recipes: ``recipes=`` supplies points of its own (sweep).
    """
    b = _values("bits", bits, width)
    s = _values("sparsity", sparsity, fraction)
    empty = [f"{name}={list(v)!r}" for name, v in (("bits", b), ("sparsity", s)) if not v]
    if not empty:
        return b, s
    are = f"{' and '.join(empty)} {'is' if len(empty) == 1 else 'are'} empty"
    if layout == "product":
        if len(empty) == 2 and recipes:
            return b, s  # recipes= alone: the grid is off
        raise ConfigError(
            f"{are}: sweep measures every bits × sparsity pair, so "
            + ("the other list would be dropped silently" if len(empty) == 1 else "only the baseline would be measured")
            + ". Give both at least one value (sparsity=[0.0] for unpruned points, bits=[32] for float "
            "weights), or leave both empty and pass recipes=[...]."
        )
    if layout == "separate" and len(empty) == 1:
        return b, s  # that axis is not probed
    if layout == "separate":
        raise ConfigError(f"{are}: nothing to probe. Give at least one width or sparsity (one list may be empty).")
    raise ConfigError(
        f"{are}: search picks each layer's value from these lists, so each "
        "needs at least one value (e.g. bits=[8, 4], sparsity=[0.0, 0.5])."
    )


def finite_number(name: str, value: Any, *, low: float, high: float = math.inf, low_open: bool = False, high_open: bool = False, hint: str = "") -> float:
    """``value`` as a float, refused unless a finite number in the stated range (NaN and inf included)."""
    above = f"> {low:g}" if low_open else f">= {low:g}"
    below = "" if high == math.inf else (f" and < {high:g}" if high_open else f" and <= {high:g}")
    v = as_real(value)
    ok = v is not None and math.isfinite(v)
    if ok:
        ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        raise ConfigError(f"{name}={value!r} is not allowed: it must be a finite number {above}{below}{hint}.")
    return v  # type: ignore[return-value]


def count(name: str, value: Any, *, low: int, hint: str = "") -> int:
    """``value`` as an int, refused unless an integer >= ``low`` (bools and floats such as 4.0 refused)."""
    number = as_integer(value)
    if number is None or number < low:
        raise ConfigError(f"{name}={value!r} is not allowed: it must be an integer >= {low}{hint}.")
    return number


def _nothing() -> None:
    """The no-op ``check_executor`` submits (module level, so process pools can pickle it)."""


def check_executor(executor: Any) -> None:
    """Refuse anything but a ``concurrent.futures.Executor`` instance that still accepts work.

    "Still accepts work" is asked of the executor itself, not read from private
    attributes: a no-op is submitted, and an executor that was shut down (or whose
    workers died) refuses it with ``RuntimeError``, as the ``Executor`` contract says.
    """
    if executor is None:
        return
    fix = (
        "pass an instance, e.g. executor=concurrent.futures.ProcessPoolExecutor(2) or Dask's "
        "client.get_executor(), or executor=None to run the points here one by one"
    )
    if isinstance(executor, type):
        raise ConfigError(f"executor={executor!r} is a class, not an executor; {fix}.")
    if not isinstance(executor, cf.Executor):
        raise ConfigError(f"executor={executor!r} is not a concurrent.futures.Executor; {fix}.")
    try:
        executor.submit(_nothing).cancel()  # cancelled if still queued; harmless if it already ran
    except RuntimeError as exc:
        raise ConfigError(
            f"executor={executor!r} does not accept work ({exc}): it was shut down or its workers "
            "died. Create a new executor, or pass executor=None to run the points here."
        ) from exc
