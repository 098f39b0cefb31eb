"""Keyword overrides of a verb's config object: ``search(model, data, config=SearchConfig(...), objective="latency")``.

The verbs that take a config (``search`` a ``SearchConfig`` as ``config=``, ``sweep`` and the ``Explorer`` a
``Grid`` as ``grid=``) also read its fields as keywords, applied on top of it, as ``finetune`` reads
``Training``'s and every verb that measures reads ``Settings``'s (``rounds=``).
``with_overrides`` splits a verb's keywords into those of its config and those of ``Settings`` (measurement),
and refuses any other with the names that are allowed: a misspelt keyword is an error, never ignored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from squeezelab.engine.core.errors import ConfigError
from squeezelab.engine.measurement.metrics import setting_keywords
from squeezelab.engine.measurement.point import Settings

__all__ = ["with_overrides"]

Config = TypeVar("Config")


def with_overrides(verb: str, cls: type[Config], config: Config | None, overrides: Mapping[str, Any], *,
                   keyword: str, given_as_settings: Any = None) -> tuple[Config, dict[str, Any]]:
    """``(config with its fields from overrides, the rest: Settings overrides)``.

    ``config`` (the verb's ``keyword=`` argument) None is ``cls()``; a config of another type, or a keyword
    that is neither a field of ``cls`` nor of ``Settings``, raises ``ConfigError`` naming it and the keywords
    allowed. The config is validated again with its new fields (its ``__post_init__``), so a bad value is
    refused here too. ``given_as_settings`` is what the caller passed as ``settings``: a ``cls`` there (the
    third argument of every verb that measures is its ``Settings``) is refused with the keyword to use.
    A keyword that names a field of both goes to the config (``search``'s ``confidence=``); the ``Settings``
    field of that name is then set through ``settings`` only.
    """
    if isinstance(given_as_settings, cls):
        raise ConfigError(
            f"{verb} got a {cls.__name__} where its Settings go (the third argument is how to measure); pass it as "
            f"{keyword}={given_as_settings!r}."
        )
    if config is not None and not isinstance(config, cls):
        raise ConfigError(
            f"{verb} got {keyword}={config!r}, a {type(config).__name__} where a {cls.__name__} goes; pass "
            f"{keyword}={cls.__name__}(...) (or its fields as keywords)."
        )
    own = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(overrides) - own - setting_keywords())
    if unknown:
        raise ConfigError(
            f"{verb} got unknown keyword(s) {unknown}: {cls.__name__}'s fields are {sorted(own)}; Settings' "
            f"(how to measure) are {sorted(Settings.__dataclass_fields__)}."
        )
    mine = {k: v for k, v in overrides.items() if k in own}
    base = config if config is not None else cls()
    return (dataclasses.replace(base, **mine) if mine else base), {k: v for k, v in overrides.items() if k not in own}
