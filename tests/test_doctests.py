"""The examples in docstrings run and print what they say (doctest over the installed modules)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import squeezelab
import squeezelab.engine

MODULES = ["squeezelab", "squeezelab.engine.quantization"] + [
    m.name for m in pkgutil.walk_packages(squeezelab.engine.__path__, "squeezelab.engine.") if not m.ispkg
]


@pytest.mark.parametrize("name", sorted(set(MODULES)))
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_modules_with_examples_are_covered():
    with_examples = [
        n for n in MODULES if doctest.DocTestFinder().find(importlib.import_module(n)) and any(
            t.examples for t in doctest.DocTestFinder().find(importlib.import_module(n))
        )
    ]
    assert {"squeezelab.engine.core.recipe", "squeezelab.engine.pipeline.compress", "squeezelab.engine.quantization.linear"} <= set(with_examples)
