"""The public surface is listed once (squeezelab/_public.py), small at the top level, documented on the site,
and the names that left the top level still resolve for one release with a warning that names their place."""

from __future__ import annotations

import importlib
import re
import types
import warnings

import pytest

import squeezelab as sl
from squeezelab._public import PUBLIC, holder, moved_from_top_level, names_of

from _markdown import DOCS

REFERENCE = DOCS / "reference"
# Modules documented whole on a reference page (every name of their __all__ is public).
MODULES_DOCUMENTED_WHOLE = {"squeezelab.engine.core.errors"}


def test_the_top_level_holds_the_verbs_and_configs_and_not_much_else():
    assert 35 <= len(names_of("squeezelab")) <= 45
    assert {"compress", "prune", "quantize", "measure", "sweep", "search", "Recipe", "Settings", "SqueezeError"} <= set(sl.__all__)
    assert not {"ConfigError", "top1_accuracy", "Evaluator", "prune_channels", "default_model"} & set(sl.__all__)


@pytest.mark.parametrize("module", list(PUBLIC))
def test_every_public_name_resolves_to_what_its_module_holds(module):
    facade = importlib.import_module(module)
    names = names_of(module)
    assert [n for n in facade.__all__ if n != "__version__"] == list(names)
    for name, where in names.items():
        value = getattr(facade, name)
        assert not isinstance(value, types.ModuleType), name
        assert value is getattr(importlib.import_module(where), name)
    assert set(names) <= set(dir(facade))


def test_no_name_is_listed_twice_except_the_base_error():
    seen: dict[str, list[str]] = {}
    for module in PUBLIC:
        for where, names in PUBLIC[module].items():
            assert len(names) == len(set(names)), where
            for name in names:
                seen.setdefault(name, []).append(module)
    assert {name: modules for name, modules in seen.items() if len(modules) > 1} == {
        "SqueezeError": ["squeezelab", "squeezelab.errors"]
    }


def test_the_reference_pages_document_every_public_name_and_nothing_else():
    directives = [m for page in REFERENCE.glob("*.md") for m in re.findall(r"^::: (\S+)$", page.read_text(), flags=re.M)]
    documented = []
    for target in directives:  # a module's directive documents the names of its __all__
        module = importlib.import_module(target) if target in MODULES_DOCUMENTED_WHOLE else None
        documented += [f"{target}.{name}" for name in module.__all__] if module is not None else [target]
    expected = [f"{holder(where)}.{name}" for module in PUBLIC for where, names in PUBLIC[module].items() for name in names]
    assert sorted(documented) == sorted(set(expected))
    index = (REFERENCE / "index.md").read_text()
    for module in PUBLIC:  # the overview names every public module and every name in it (errors: their page)
        assert f"`{module}`" in index
        if module != "squeezelab.errors":
            assert [n for n in names_of(module) if f"`{n}`" not in index] == []


def test_a_moved_name_still_resolves_with_a_warning_naming_its_new_place():
    from squeezelab.errors import ConfigError
    from squeezelab.metrics import top1_agreement

    with pytest.warns(DeprecationWarning, match=r"squeezelab\.ConfigError is deprecated: use squeezelab\.errors\.ConfigError"):
        assert sl.ConfigError is ConfigError
    with pytest.warns(DeprecationWarning, match=r"use squeezelab\.metrics\.top1_agreement"):
        assert sl.top1_agreement is top1_agreement
    with pytest.warns(DeprecationWarning, match=r"squeezelab\.prune\(model, squeezelab\.ChannelPruning"):
        assert callable(sl.prune_channels)
    with pytest.warns(DeprecationWarning, match=r"use squeezelab\.engine\.quantization\.choose_qparams"):
        from squeezelab.engine.quant import choose_qparams
    from squeezelab.engine.quantization import choose_qparams as new

    assert choose_qparams is new


def test_every_name_of_the_old_top_level_is_still_reachable_there():
    old_top_level = set(moved_from_top_level()) | set(names_of("squeezelab")) - {"Training"}  # new since 0.1
    assert len(old_top_level) == 90  # squeezelab 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert [name for name in old_top_level if getattr(sl, name, None) is None] == []


def test_sub_modules_are_reachable_from_the_top_level_without_an_import():
    assert sl.errors.DataError.__name__ == "DataError"
    assert sl.metrics.cosine_to_baseline.reference == "baseline"
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        sl.not_a_name
