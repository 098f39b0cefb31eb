"""The base of every config: plain data out (``to_dict``), plain data in (``_from_dict``), shared checks.

Every config of ``squeezelab.engine.core`` (``quantizers``, ``pruners``, ``runtimes``, ``recipe``) is a
frozen, keyword-only dataclass built on ``_Config`` and registered with ``@_register``. Loading only
accepts registered types, so a dict can never name an arbitrary class to construct.

Number fields go through ``_int_field`` / ``_fraction_field``: numpy scalars and 0-d arrays are
accepted and stored as the plain ``int`` / ``float`` they hold (so ``bits=np.int64(4)`` makes the
same config, hash, cache key and TOML as ``bits=4``), and a float where an integer is meant
(``bits=4.0``) is refused now rather than failing later inside ``compress``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from squeezelab.engine.core.arguments import as_integer, as_real
from squeezelab.engine.core.errors import ConfigError

__all__: list[str] = []  # the base and the checks serve the config modules of this package

# Allowlist for _from_dict: type name -> class. Filled by @_register in the config modules.
_REGISTRY: dict[str, type] = {}

# Fields that hold a nested config: (owner type name, field name) -> the base the value must be.
# Filled by the module that defines the owner, so this module imports none of them.
_NESTED: dict[tuple[str, str], type] = {}

# Nested fields that also take a name the owner resolves itself (Int8Static(calibration="entropy")),
# so hand-written TOML can say calibration = "entropy".
_NAMED_FIELDS: set[tuple[str, str]] = set()


def _register(cls: type) -> type:
    _REGISTRY[cls.__name__] = cls
    return cls


def _check_int(owner: str, name: str, value: Any, low: int, high: int, hint: str = "") -> int:
    """``value`` as a plain ``int`` in ``low..high`` (numpy integers accepted; floats and bools refused)."""
    number = as_integer(value)
    if number is None or not low <= number <= high:
        raise ConfigError(
            f"{owner}: {name}={value!r} is not allowed; {name} must be an integer in "
            f"{low}..{high}{hint}."
        )
    return number


def _int_field(config: Any, name: str, low: int, high: int, *, owner: str | None = None, hint: str = "") -> int:
    """Check the integer field ``name`` of a frozen config and store it as a plain ``int``."""
    number = _check_int(owner or type(config).__name__, name, getattr(config, name), low, high, hint)
    object.__setattr__(config, name, number)
    return number


def _fraction_field(config: Any, name: str, example: str, *, owner: str | None = None) -> float:
    """Check the field ``name`` of a frozen config is a number in [0, 1) and store it as a plain ``float``."""
    value = getattr(config, name)
    number = as_real(value)
    if number is None or not 0.0 <= number < 1.0:
        raise ConfigError(f"{owner or type(config).__name__}: {name}={value!r} must be a number in [0, 1) ({example}).")
    object.__setattr__(config, name, number)
    return number


def _check_bool(owner: str, name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{owner}: {name}={value!r} must be True or False.")


def _check_optional_bool(owner: str, name: str, value: Any) -> None:
    if value is not None and not isinstance(value, bool):
        raise ConfigError(f"{owner}: {name}={value!r} must be True, False or None (decide for this machine).")


class _Config:
    """Shared plain-data behaviour of every config."""

    def to_dict(self) -> dict[str, Any]:
        """Plain data: ``{"type": ClassName, field: value, ...}``; ``None`` fields omitted."""
        out: dict[str, Any] = {"type": type(self).__name__}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is None:
                continue
            out[f.name] = value.to_dict() if isinstance(value, _Config) else value
        return out


def _from_dict(data: Any, expected: type) -> Any:
    """Build a registered config from plain data, refusing unknown types and keys."""
    if isinstance(data, _Config):
        return data
    if not isinstance(data, dict) or "type" not in data:
        raise ConfigError(
            f"expected a dict with a 'type' key for a {expected.__name__}, got {data!r}."
        )
    name = data["type"]
    cls = _REGISTRY.get(name)
    if cls is None or not issubclass(cls, expected):
        allowed = sorted(k for k, v in _REGISTRY.items() if issubclass(v, expected))
        raise ConfigError(
            f"unknown {expected.__name__} type {name!r}; allowed: {', '.join(allowed)}."
        )
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key == "type":
            continue
        if key not in known:
            raise ConfigError(
                f"{name} has no field {key!r}; valid fields: {', '.join(sorted(known)) or 'none'}."
            )
        nested = _NESTED.get((name, key))
        if (name, key) in _NAMED_FIELDS and isinstance(value, str):
            kwargs[key] = value  # Int8Static accepts "minmax" / "percentile" / "entropy" itself
        else:
            kwargs[key] = _from_dict(value, nested) if nested else value
    try:
        return cls(**kwargs)
    except TypeError as exc:  # e.g. a list where a tuple was expected
        raise ConfigError(f"cannot build {name} from {data!r}: {exc}") from exc
